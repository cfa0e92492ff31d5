//! The user's key on this machine.
//!
//! Kept in `$XDG_CONFIG_HOME/datamesh/user.key` (or `~/.config/...`), mode
//! 0600, or wherever `DATAMESH_USER_KEY` points. Never inside a node's data
//! dir: nodes must not hold users' keys. Created on first use, with a plain
//! warning that losing it loses the data.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use datamesh_pipeline::keys::{KeyError, UserKey};
use zeroize::Zeroizing;

/// Where the key file is.
pub fn key_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    config_dir().join("user.key")
}

fn config_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("datamesh");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => PathBuf::from(h).join(".config/datamesh"),
        None => PathBuf::from(".datamesh"),
    }
}

/// Reads a passphrase from `env` or, on a terminal only, a prompt; wiped
/// from memory when dropped.
pub fn passphrase(env: &str, prompt: &str) -> Result<Option<Zeroizing<String>>> {
    if let Ok(p) = std::env::var(env) {
        return Ok(Some(Zeroizing::new(p)));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Some(Zeroizing::new(rpassword::prompt_password(prompt)?)));
    }
    Ok(None)
}

/// Why a file passphrase must be strong, in every message about one.
pub const PASSPHRASE_EXPOSURE: &str = "a passphrase wrap is stored in the file's manifest, which any peer can fetch, \
so it faces offline guessing at whatever speed the attacker can afford";

/// Refuses a passphrase too weak to wrap a file's key: empty, or scoring
/// below 3 ("safely unguessable: moderate protection from an offline
/// slow-hash scenario", about 10^8 guesses or more) by the zxcvbn
/// estimator, which knows dictionaries, names, keyboard walks, dates,
/// repeats and leetspeak. `context` (the file's name) counts as guessable.
pub fn check_file_passphrase(p: &str, context: &[&str]) -> Result<()> {
    if p.is_empty() {
        bail!(
            "an empty passphrase protects nothing: {PASSPHRASE_EXPOSURE}. Choose a long passphrase (several random words)"
        );
    }
    let e = zxcvbn::zxcvbn(p, context);
    if e.score() < zxcvbn::Score::Three {
        let mut hint = String::new();
        if let Some(f) = e.feedback() {
            if let Some(w) = f.warning() {
                hint.push_str(&format!(" ({w})"));
            }
            for s in f.suggestions() {
                hint.push_str(&format!(" {s}"));
            }
        }
        bail!(
            "this passphrase is too weak (guessed in about 10^{:.0} tries){hint}: {PASSPHRASE_EXPOSURE}. \
             Choose a longer one (several random words), or leave out --passphrase: your key alone opens the file",
            e.guesses_log10()
        );
    }
    Ok(())
}

/// Loads the user's key, creating it on first use.
pub fn load_or_create(explicit: Option<&Path>, quiet: bool) -> Result<UserKey> {
    let path = key_path(explicit);
    match read_key_file(&path) {
        Ok(Some(bytes)) => parse(&path, &bytes),
        Ok(None) => {
            let key = UserKey::generate();
            write_key_file(&path, &key.to_file_bytes(None))?;
            if !quiet {
                eprintln!(
                    "Created your DataMesh key at {}.\n\
                     It is the only way to read your encrypted files: if you lose it, the data is lost.\n\
                     Back it up now with `datamesh key export -o <file>` (and `datamesh key import <file>` on another machine).",
                    path.display()
                );
            }
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// Reads the key file at `path` (None when there is none), refusing one
/// that other users can read or write: the key opens every file of its
/// owner, so it must be the owner's alone.
pub fn read_key_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read your key file {}", path.display())),
    };
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "your key file {} can be read or written by other users (mode {:o}); it opens all your files. Run `chmod 600 {}` and try again",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let mut bytes = Zeroizing::new(Vec::new());
    f.by_ref().take(1 << 20).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Parses a key file, asking for its passphrase if it is protected.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<UserKey> {
    let pass = if UserKey::is_protected(bytes) {
        match passphrase("DATAMESH_KEY_PASSPHRASE", "Passphrase of your DataMesh key: ")? {
            Some(p) => Some(p),
            None => bail!(
                "your key {} is passphrase-protected and stdin is not a terminal: set DATAMESH_KEY_PASSPHRASE",
                path.display()
            ),
        }
    } else {
        None
    };
    UserKey::from_file_bytes(bytes, pass.as_ref().map(|p| p.as_str()))
        .map_err(|e: KeyError| anyhow::anyhow!("key file {}: {e}", path.display()))
}

/// Writes a key file atomically with mode 0600, refusing to overwrite.
pub fn write_key_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    datamesh_store::write_file_atomically(path, bytes, true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
