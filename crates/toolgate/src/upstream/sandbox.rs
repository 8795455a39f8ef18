//! The filesystem sandbox of `sandbox:` stdio servers, with Landlock (Linux).
//!
//! The ruleset is built in the gateway before the fork — building it opens the
//! allowed paths and allocates, which a forked child of a multi-threaded process
//! must not do — and the child only enforces it (`restrict_self`: two system
//! calls) between fork and exec. Landlock confines the child and everything it
//! starts, and can never be lifted by them.

use crate::config::Sandbox;
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, path_beneath_rules,
};
use std::path::{Path, PathBuf};

/// The newest Landlock ABI asked for; older kernels get what they support.
const ABI_WANTED: ABI = ABI::V3;

/// Read (and execute) access for every sandboxed child: what a program needs
/// to be loaded and run at all.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev",
];

/// Write access for every sandboxed child.
const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// Build the ruleset for one child: `Ok(None)` where the kernel has no
/// Landlock (the child then runs without it: best effort), an error if a kernel
/// with Landlock cannot take it (the child must then not start).
pub fn ruleset(
    cfg: &Sandbox,
    command: &Path,
    cwd: Option<&Path>,
) -> Result<Option<RulesetCreated>, String> {
    if !supported() {
        return Ok(None);
    }
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    read.extend(resolve(command));
    read.extend(cwd.map(Path::to_path_buf));
    read.extend(cfg.read.iter().cloned());
    let mut write: Vec<PathBuf> = SYSTEM_WRITE.iter().map(PathBuf::from).collect();
    write.extend(cfg.write.iter().cloned());
    let built = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .and_then(|r| r.create())
        // Paths that do not exist are skipped: nothing can be granted below them.
        .and_then(|r| r.add_rules(path_beneath_rules(&read, AccessFs::from_read(ABI_WANTED))))
        .and_then(|r| r.add_rules(path_beneath_rules(&write, AccessFs::from_all(ABI_WANTED))));
    built
        .map(Some)
        .map_err(|e| format!("cannot build the Landlock ruleset: {e}"))
}

/// Enforce `ruleset` on the calling process. Runs in the forked child before
/// exec: only system calls (prctl, landlock_restrict_self).
pub fn enforce(ruleset: RulesetCreated) -> std::io::Result<()> {
    ruleset
        .restrict_self()
        .map(|_| ())
        .map_err(|_| std::io::Error::other("landlock_restrict_self failed"))
}

/// Does the running kernel enforce Landlock at all?
fn supported() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}

/// The executable a command names: as is with a `/`, else found on `PATH`.
fn resolve(command: &Path) -> Option<PathBuf> {
    if command.components().count() > 1 {
        return Some(command.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
}
