//! `s3lun generate man|completions DIR`: the man pages (one per subcommand, and
//! `s3lun.toml(5)`) and the bash, zsh and fish completions, generated from the clap
//! definitions so they cannot drift from the code. The packages ship them.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// `s3lun.toml(5)`: where the keys are documented, and the example a worker starts
/// from (the packaged config).
const CONFIG_PAGE: &str = r#".TH S3LUN.TOML 5 "" "s3lun" "File Formats"
.SH NAME
s3lun.toml \- configuration of the s3lun iSCSI target
.SH SYNOPSIS
/etc/s3lun/s3lun.toml
.SH DESCRIPTION
A TOML file read by
.B s3lun serve \-\-config
and checked by
.BR "s3lun check" .
Every key is optional; command-line flags override the file; an unknown key is an
error. Sections: [s3] (how to reach S3), [cache] (the block cache), [catalog] (images
from boot manifests, IMS and prefixes), [lunmap] (the fleet's shared LUN numbers),
[chap] and [discovery_chap] (CHAP), [[lun]] (images served whatever the catalog
holds). Every key, its default and what it does is listed in
/usr/share/doc/s3lun/docs/configuration.md.
.SH FILES
/etc/s3lun/s3lun.toml, /var/lib/s3lun/state.json (LUN numbers), /var/cache/s3lun
(the block cache), /run/s3lun/admin-PORT.sock (the admin socket).
.SH SEE ALSO
.BR s3lun (1),
.BR s3lun-serve (1),
.BR s3lun-check (1)
"#;

/// Write the man pages into `dir`.
pub fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    std::fs::write(dir.join("s3lun.toml.5"), CONFIG_PAGE)?;
    Ok(())
}

/// Write bash, zsh and fish completions into `dir`.
pub fn completions(dir: &Path) -> anyhow::Result<()> {
    use clap_complete::{generate_to, Shell};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        generate_to(shell, &mut cmd, "s3lun", dir)
            .with_context(|| format!("{shell} completions into {}", dir.display()))?;
    }
    Ok(())
}
