//! `plutus-sync run`: the service.

use crate::config::Settings;
use crate::service::{self, Mode};
use tokio_util::sync::CancellationToken;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    crate::shutdown::on_signal(cancel.clone())?;
    service::run(settings, Mode::Service, cancel).await?;
    Ok(())
}
