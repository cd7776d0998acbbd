//! `file://` transport: a local or mounted folder (an SMB share, say), with the same
//! temp-verify-rename protocol as SFTP.

use super::{Connection, Fault, Remote, RemoteError, TransferError, Transport};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub struct LocalTransport {
    pub inbox: PathBuf,
    pub temp_suffix: String,
}

impl Transport for LocalTransport {
    fn connect(&self) -> Result<Box<dyn Connection>, TransferError> {
        match fs::metadata(&self.inbox) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(TransferError::Connect {
                    dest: self.describe(),
                    message: "not a directory".into(),
                })
            }
            Err(e) => {
                return Err(TransferError::Connect {
                    dest: self.describe(),
                    message: e.to_string(),
                })
            }
        }
        Ok(Box::new(LocalConn {
            inbox: self
                .inbox
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
            temp_suffix: self.temp_suffix.clone(),
        }))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.inbox.display())
    }
}

struct LocalConn {
    inbox: String,
    temp_suffix: String,
}

fn fault(op: &'static str, path: &str, e: io::Error) -> RemoteError {
    super::io_fault(op, path, e)
}

impl Remote for LocalConn {
    type Writer = fs::File;
    type Reader = fs::File;

    fn create(&mut self, path: &str) -> Result<fs::File, RemoteError> {
        fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| fault("create", path, e))
    }

    fn sync(&mut self, w: &mut fs::File, path: &str) -> Result<bool, RemoteError> {
        w.sync_all().map_err(|e| fault("fsync", path, e))?;
        Ok(true)
    }

    fn close(&mut self, w: fs::File, _path: &str) -> Result<(), RemoteError> {
        drop(w);
        Ok(())
    }

    fn open(&mut self, path: &str) -> Result<fs::File, RemoteError> {
        fs::File::open(path).map_err(|e| fault("open", path, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), RemoteError> {
        // link + unlink never replaces `to`, as OpenSSH's sftp-server does it.
        match fs::hard_link(from, to) {
            Ok(()) => {
                fs::remove_file(from).map_err(|e| fault("rename", from, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RemoteError {
                    op: "rename",
                    path: to.to_string(),
                    fault: Fault::Failure,
                    message: "target exists".into(),
                })
            }
            // Some shares (SMB, vfat) have no hard links: check, then rename. The check
            // and the rename are two steps; on such a share that window is unavoidable.
            Err(_) => {
                if Path::new(to).exists() {
                    return Err(RemoteError {
                        op: "rename",
                        path: to.to_string(),
                        fault: Fault::Failure,
                        message: "target exists".into(),
                    });
                }
                fs::rename(from, to).map_err(|e| fault("rename", from, e))?;
            }
        }
        // The rename is what makes the file visible; make it durable too.
        if let Ok(dir) = fs::File::open(&self.inbox) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fault("stat", path, e)),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        fs::remove_file(path).map_err(|e| fault("remove", path, e))
    }

    fn list(&mut self) -> Result<Vec<String>, RemoteError> {
        let rd = fs::read_dir(&self.inbox).map_err(|e| fault("list", &self.inbox, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| fault("list", &self.inbox, e))?;
            if let Ok(name) = ent.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn inbox(&self) -> &str {
        &self.inbox
    }

    fn temp_suffix(&self) -> &str {
        &self.temp_suffix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::{Delivered, Job};

    fn job(data: &[u8]) -> (u64, u32) {
        (data.len() as u64, crc32fast::hash(data))
    }

    fn conn(dir: &Path) -> Box<dyn Connection> {
        LocalTransport {
            inbox: dir.to_path_buf(),
            temp_suffix: ".part".into(),
        }
        .connect()
        .unwrap()
    }

    #[test]
    fn a_file_is_delivered_byte_identical_and_no_temp_remains() {
        let dir = tempfile::tempdir().unwrap();
        let data = br#"{"order":1}"#;
        let (size, crc32) = job(data);
        let mut seen = Vec::new();
        let out = conn(dir.path())
            .deliver(
                &Job {
                    name: "o.json",
                    size,
                    crc32,
                },
                &mut &data[..],
                "src",
                &mut |p| seen.push(p.to_string()),
            )
            .unwrap();
        assert!(matches!(out, Delivered::Sent { .. }));
        assert_eq!(fs::read(dir.path().join("o.json")).unwrap(), data);
        assert!(!dir.path().join("o.json.part").exists());
        assert_eq!(seen, vec![format!("{}/o.json.part", dir.path().display())]);
    }

    #[test]
    fn the_same_file_again_counts_as_delivered_and_a_different_one_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("o.json"), b"{}").unwrap();
        let (size, crc32) = job(b"{}");
        let mut c = conn(dir.path());
        let out = c
            .deliver(
                &Job {
                    name: "o.json",
                    size,
                    crc32,
                },
                &mut &b"{}"[..],
                "src",
                &mut |_| {},
            )
            .unwrap();
        assert!(matches!(out, Delivered::AlreadyThere { .. }));

        let other = b"[1]";
        let (size, crc32) = job(other);
        let err = c
            .deliver(
                &Job {
                    name: "o.json",
                    size,
                    crc32,
                },
                &mut &other[..],
                "src",
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, TransferError::Conflict { .. }), "{err}");
        assert_eq!(err.scope(), super::super::Scope::File);
        assert_eq!(fs::read(dir.path().join("o.json")).unwrap(), b"{}");
        assert!(!dir.path().join("o.json.part").exists());
    }

    #[test]
    fn a_source_that_changed_since_intake_is_not_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let err = conn(dir.path())
            .deliver(
                &Job {
                    name: "o.json",
                    size: 2,
                    crc32: 1,
                },
                &mut &b"{}"[..],
                "src",
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, TransferError::SourceChanged { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn leftover_temp_files_are_cleaned_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json.part"), b"{").unwrap();
        fs::write(dir.path().join("b.json"), b"{}").unwrap();
        // A temp name of a file plutus-sync would never send: the ERP's, not ours.
        fs::write(dir.path().join("erp-import.csv.part"), b"x").unwrap();
        let ours = |name: &str| name.ends_with(".json");
        let removed = conn(dir.path()).clean_temps(&ours).unwrap();
        assert_eq!(removed, vec!["a.json.part".to_string()]);
        assert!(dir.path().join("b.json").exists());
        assert!(dir.path().join("erp-import.csv.part").exists());
        assert!(!dir.path().join("a.json.part").exists());
    }

    #[test]
    fn a_missing_inbox_is_a_destination_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = LocalTransport {
            inbox: gone,
            temp_suffix: ".part".into(),
        }
        .connect()
        .err()
        .unwrap();
        assert_eq!(err.scope(), super::super::Scope::Destination);
    }
}
