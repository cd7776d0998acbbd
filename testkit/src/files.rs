//! Files and folders as the tests and benches look at them: names, contents, counts,
//! disk usage. Read-only.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Calls `each` for every entry below `dir` that is not a folder, depth first.
/// Unreadable folders and entries are passed over: a file the service moves away
/// meanwhile is simply not there.
fn walk(dir: &Path, mut each: impl FnMut(&fs::DirEntry)) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => each(&e),
                Err(_) => {}
            }
        }
    }
}

/// Every file below `dir` (the archive's dated folders flattened): (name, bytes),
/// sorted.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    walk(dir, |e| {
        if let Ok(body) = fs::read(e.path()) {
            out.push((e.file_name().to_string_lossy().into_owned(), body));
        }
    });
    out.sort();
    out
}

/// How many files are below `dir`, without reading them.
pub fn count_files_under(dir: &Path) -> usize {
    let mut n = 0;
    walk(dir, |_| n += 1);
    n
}

/// Bytes allocated on disk to the files below `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut n = 0;
    walk(dir, |e| {
        if let Ok(m) = e.metadata() {
            n += m.blocks() * 512;
        }
    });
    n
}

/// Names of the entries directly in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// How many entries are directly in `dir`, without collecting their names.
pub fn count_in(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| rd.count())
}
