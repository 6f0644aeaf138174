//! Images without a registry: docker-save tars built locally (busybox from Debian's
//! `busybox-static`, and the pod sandbox "pause" image), imported into containerd with `ctr`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::NodeError;

/// The sandbox image every pod's infrastructure container runs.
pub const PAUSE_IMAGE: &str = "capstan.local/pause:3.9";
/// The busybox image tests and examples use.
pub const BUSYBOX_IMAGE: &str = "capstan.local/busybox:latest";

/// The second tag of the busybox image (the same busybox, `/etc/capstan-release` reading `2`),
/// for trying rolling updates.
pub const BUSYBOX_IMAGE_2: &str = "capstan.local/busybox:2";

/// The pause program: PID 1 of a pod sandbox. It reaps orphans and exits on SIGTERM/SIGINT.
const PAUSE_C: &str = r"
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void done(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, done);
  signal(SIGINT, done);
  signal(SIGCHLD, reap);
  for (;;) pause();
  return 0;
}
";

/// A file in an image layer.
enum Entry {
    Dir(String),
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
}

/// Appends one ustar header (and the data, padded) for `entry`.
fn tar_entry(out: &mut Vec<u8>, entry: &Entry) -> Result<(), NodeError> {
    let (path, mode, size, kind, link) = match entry {
        Entry::Dir(path) => (format!("{path}/"), 0o755, 0, b'5', ""),
        Entry::File { path, mode, data } => (path.clone(), *mode, data.len(), b'0', ""),
        Entry::Symlink { path, target } => (path.clone(), 0o777, 0, b'2', target.as_str()),
    };
    if path.len() > 99 || link.len() > 99 {
        return Err(NodeError::Image(format!("tar path too long: {path}")));
    }
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    let octal = |header: &mut [u8; 512], at: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}\0", w = width - 1);
        header[at..at + width].copy_from_slice(text.as_bytes());
    };
    octal(&mut header, 100, 8, u64::from(mode));
    octal(&mut header, 108, 8, 0);
    octal(&mut header, 116, 8, 0);
    octal(&mut header, 124, 12, size as u64);
    octal(&mut header, 136, 12, 0);
    header[148..156].copy_from_slice(b"        ");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&header);
    if let Entry::File { data, .. } = entry {
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    Ok(())
}

fn tar(entries: &[Entry]) -> Result<Vec<u8>, NodeError> {
    let mut out = Vec::new();
    for entry in entries {
        tar_entry(&mut out, entry)?;
    }
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes a one-layer docker-save tar of `layer` tagged `reference`, running `cmd` by default.
fn write_image(out: &Path, reference: &str, layer: &[Entry], cmd: &[&str]) -> Result<(), NodeError> {
    write_images(out, &[(reference, vec![tar(layer)?])], cmd)
}

/// Writes a docker-save tar of several images, each a tag and its layers (tar archives, base
/// first); a layer several images share is stored once. Each image runs `cmd` by default.
fn write_images(out: &Path, images: &[(&str, Vec<Vec<u8>>)], cmd: &[&str]) -> Result<(), NodeError> {
    let mut files = Vec::new();
    let mut manifest = Vec::new();
    let mut stored = std::collections::BTreeSet::new();
    for (reference, layers) in images {
        let digests: Vec<String> = layers.iter().map(|layer| hex(&Sha256::digest(layer))).collect();
        for (digest, layer) in digests.iter().zip(layers) {
            if stored.insert(digest.clone()) {
                files.push(Entry::Dir(digest.clone()));
                files.push(Entry::File { path: format!("{digest}/layer.tar"), mode: 0o644, data: layer.clone() });
            }
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": digests.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
        })
        .to_string()
        .into_bytes();
        let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [reference],
            "Layers": digests.iter().map(|d| format!("{d}/layer.tar")).collect::<Vec<_>>(),
        }));
        if stored.insert(config_name.clone()) {
            files.push(Entry::File { path: config_name, mode: 0o644, data: config });
        }
    }
    let manifest = serde_json::Value::Array(manifest).to_string().into_bytes();
    files.push(Entry::File { path: "manifest.json".into(), mode: 0o644, data: manifest });
    let archive = tar(&files)?;
    let mut file = std::fs::File::create(out).map_err(|e| NodeError::io("create", out, e))?;
    file.write_all(&archive).map_err(|e| NodeError::io("write", out, e))
}

fn base_dirs() -> Vec<Entry> {
    ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "home"].iter().map(|d| Entry::Dir((*d).into())).collect()
}

/// Writes a busybox image tar from the host's static busybox, with two tags: [`BUSYBOX_IMAGE`]
/// and [`BUSYBOX_IMAGE_2`], which share the busybox layer and differ in `/etc/capstan-release`
/// (`1` and `2`).
pub fn build_busybox(out: &Path) -> Result<(), NodeError> {
    let busybox = Path::new("/bin/busybox");
    let data = std::fs::read(busybox).map_err(|e| {
        NodeError::Image(format!("cannot read {}: {e}; install it with `scripts/install-deps node`", busybox.display()))
    })?;
    let listed = Command::new(busybox).arg("--list").output().map_err(|e| NodeError::io("run", busybox, e))?;
    let mut entries = base_dirs();
    entries.push(Entry::File { path: "bin/busybox".into(), mode: 0o755, data });
    for applet in String::from_utf8_lossy(&listed.stdout).lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" {
            entries.push(Entry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
        }
    }
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n".to_vec(),
    });
    entries.push(Entry::File { path: "etc/group".into(), mode: 0o644, data: b"root:x:0:\nnobody:x:65534:\n".to_vec() });
    let base = tar(&entries)?;
    let release = |n: &str| {
        tar(&[
            Entry::Dir("etc".into()),
            Entry::File { path: "etc/capstan-release".into(), mode: 0o644, data: format!("{n}\n").into_bytes() },
        ])
    };
    write_images(
        out,
        &[(BUSYBOX_IMAGE, vec![base.clone(), release("1")?]), (BUSYBOX_IMAGE_2, vec![base, release("2")?])],
        &["sh"],
    )
}

/// Compiles the pause program (static, with the host's C compiler) and writes its image tar
/// (tag [`PAUSE_IMAGE`]).
pub fn build_pause(out: &Path, work: &Path) -> Result<(), NodeError> {
    std::fs::create_dir_all(work).map_err(|e| NodeError::io("create", work, e))?;
    let source = work.join("pause.c");
    let binary = work.join("pause");
    std::fs::write(&source, PAUSE_C).map_err(|e| NodeError::io("write", &source, e))?;
    let built =
        Command::new("cc").args(["-static", "-Os", "-s", "-o"]).arg(&binary).arg(&source).output().map_err(|e| {
            NodeError::Image(format!(
                "cannot run cc to build the pause binary: {e}; install gcc and libc6-dev (scripts/install-deps node)"
            ))
        })?;
    if !built.status.success() {
        return Err(NodeError::Image(format!(
            "building the pause binary failed: {}",
            String::from_utf8_lossy(&built.stderr).trim()
        )));
    }
    let data = std::fs::read(&binary).map_err(|e| NodeError::io("read", &binary, e))?;
    let mut entries = base_dirs();
    entries.push(Entry::File { path: "pause".into(), mode: 0o755, data });
    write_image(out, PAUSE_IMAGE, &entries, &["/pause"])
}

/// Imports a docker-save or OCI tar into the CRI namespace of the containerd at `address`.
pub fn import(address: &Path, tar: &Path) -> Result<(), NodeError> {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(tar)
        .output()
        .map_err(|e| NodeError::Image(format!("cannot run ctr (part of containerd): {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NodeError::Image(format!(
            "importing {} failed: {}",
            tar.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Builds the pause image under `dir` when missing and imports it.
pub fn ensure_pause(address: &Path, dir: &Path) -> Result<PathBuf, NodeError> {
    let tar = dir.join("pause.tar");
    if !tar.exists() {
        build_pause(&tar, &dir.join("pause-build"))?;
    }
    import(address, &tar)?;
    Ok(tar)
}
