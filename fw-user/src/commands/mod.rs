//! One module per subcommand.

pub mod boot;
pub mod check;
pub mod confirm;
pub mod conntrack;
pub mod events;
pub mod export;
pub mod foreground;
pub mod import;
pub mod install;
pub mod load;
pub mod metrics;
pub mod rollback;
pub mod save;
pub mod status;
pub mod unload;

use std::{fs, path::Path};

use crate::{
    error::{Error, Result},
    policy::{self, DEFAULT_POLICY, DEFAULT_POLICY_NAME, Policy},
};

/// Read and validate the policy at `path`, or the built-in one. Returns the
/// policy and the name to show for it.
pub(crate) fn read_policy(path: Option<&Path>) -> Result<(Policy, String)> {
    match path {
        None => Ok((
            policy::parse(DEFAULT_POLICY, DEFAULT_POLICY_NAME)?,
            DEFAULT_POLICY_NAME.to_string(),
        )),
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| Error::ReadPolicy {
                path: path.to_path_buf(),
                source,
            })?;
            let name = path.display().to_string();
            Ok((policy::parse_file(&text, path)?, name))
        }
    }
}
