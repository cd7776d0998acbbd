//! `file://` transport: a local or mounted folder (an SMB share, say), with the same
//! temp-verify-rename protocol as SFTP.

use super::{Connection, Fault, Remote, RemoteError, TransferError, Transport};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) struct LocalTransport {
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

    fn create_new(&mut self, path: &str) -> Result<fs::File, RemoteError> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| fault("create", path, e))
    }

    fn sync(&mut self, w: &mut fs::File, _path: &str) -> Result<bool, RemoteError> {
        // As over SFTP: a failed fsync means "no fsync here" (some shares cannot),
        // and the read-back is the proof.
        Ok(w.sync_all().is_ok())
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
    use crate::transfer::{final_of_temp, temp_name, Job, Seen};

    fn job(name: &str, data: &[u8]) -> (String, u64, u32) {
        (name.to_string(), data.len() as u64, crc32fast::hash(data))
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
    fn a_file_is_uploaded_to_its_temp_then_renamed_byte_identical_and_no_temp_remains() {
        let dir = tempfile::tempdir().unwrap();
        let data = br#"{"order":1}"#;
        let (name, size, crc32) = job("o.json", data);
        let j = Job {
            name: &name,
            size,
            crc32,
        };
        let mut c = conn(dir.path());
        let temp = temp_name("o.json", 7, ".part");
        let up = c.upload(&j, &temp, &mut &data[..], "src").unwrap();
        assert_eq!(up.temp_path, format!("{}/{temp}", dir.path().display()));
        assert!(
            !dir.path().join("o.json").exists(),
            "not visible before the rename"
        );
        assert_eq!(
            c.look(&j, &up.temp_path).unwrap(),
            (Seen::Absent, Seen::Same)
        );
        c.rename(&j, &up.temp_path).unwrap();
        assert_eq!(fs::read(dir.path().join("o.json")).unwrap(), data);
        assert_eq!(
            c.look(&j, &up.temp_path).unwrap(),
            (Seen::Same, Seen::Absent)
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_rename_onto_a_different_file_is_refused_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("o.json"), b"{}").unwrap();
        let (name, size, crc32) = job("o.json", b"[1]");
        let j = Job {
            name: &name,
            size,
            crc32,
        };
        let mut c = conn(dir.path());
        let up = c
            .upload(
                &j,
                &temp_name("o.json", 1, ".part"),
                &mut &b"[1]"[..],
                "src",
            )
            .unwrap();
        assert!(c.rename(&j, &up.temp_path).is_err());
        assert_eq!(
            c.look(&j, &up.temp_path).unwrap(),
            (Seen::Different, Seen::Same)
        );
        assert_eq!(fs::read(dir.path().join("o.json")).unwrap(), b"{}");
    }

    #[test]
    fn a_source_that_changed_since_intake_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let err = conn(dir.path())
            .upload(
                &Job {
                    name: "o.json",
                    size: 2,
                    crc32: 1,
                },
                &temp_name("o.json", 1, ".part"),
                &mut &b"{}"[..],
                "src",
            )
            .unwrap_err();
        assert!(matches!(err, TransferError::SourceChanged { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn temp_names_are_new_per_attempt_and_map_back_to_their_final_name() {
        let a = temp_name("order-1.json", 42, ".part");
        let b = temp_name("order-1.json", 42, ".part");
        assert_ne!(a, b);
        assert!(
            a.starts_with("order-1.json.42-") && a.ends_with(".part"),
            "{a}"
        );
        assert_eq!(final_of_temp(&a, ".part"), Some("order-1.json"));
        // The older scheme, and names that are not temps.
        assert_eq!(
            final_of_temp("order-1.json.part", ".part"),
            Some("order-1.json")
        );
        assert_eq!(final_of_temp("order-1.json", ".part"), None);
        assert_eq!(final_of_temp(".part", ".part"), None);
    }

    #[test]
    fn leftover_temp_files_are_cleaned_unless_claimed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let claimed = temp_name("c.json", 3, ".part");
        let leftover = temp_name("d.json", 4, ".part");
        for n in [
            "a.json.part",
            "b.json",
            "erp-import.csv.part",
            &claimed,
            &leftover,
        ] {
            fs::write(dir.path().join(n), b"{").unwrap();
        }
        let ours = |name: &str| name.ends_with(".json");
        let keep = |name: &str| name == claimed;
        let mut removed = conn(dir.path()).clean_temps(&ours, &keep).unwrap();
        removed.sort();
        assert_eq!(removed, vec!["a.json.part".to_string(), leftover.clone()]);
        assert!(dir.path().join("b.json").exists());
        // A temp name of a file plutus-sync would never send: the ERP's, not ours.
        assert!(dir.path().join("erp-import.csv.part").exists());
        assert!(dir.path().join(&claimed).exists());
    }

    #[test]
    fn the_server_probe_finds_a_rename_that_refuses_to_overwrite_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = conn(dir.path()).server().unwrap();
        assert!(t.rename_refuses_overwrite);
        assert!(t.fsync);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
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
