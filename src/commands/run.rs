//! `plutus-sync run`: the service.

use crate::cli::ConfigArgs;
use crate::service::{self, Mode};
use tokio_util::sync::CancellationToken;

pub async fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let settings = super::settings(args)?;
    let cancel = CancellationToken::new();
    crate::shutdown::on_signal(cancel.clone())?;
    service::run(settings, Mode::Service, cancel).await?;
    Ok(())
}
