//! The process's file descriptor limit. Every connection is a descriptor; without
//! enough of them, logins beyond the soft limit time out instead of being answered
//! "out of resources". At start the soft limit is raised to the hard one, and a
//! configuration the hard limit cannot cover is refused.

use thiserror::Error;

/// Descriptors beyond the connections: listeners, the metrics endpoint, the S3 pool,
/// cache and state files, logs.
pub const RESERVE: u64 = 128;

#[derive(Debug, Error)]
pub enum FdError {
    #[error("reading RLIMIT_NOFILE: {0}")]
    Get(std::io::Error),
    #[error(
        "the open-files limit (RLIMIT_NOFILE) is {hard}, and {need} descriptors are needed \
         ({why}): raise it (ulimit -n, LimitNOFILE= in the unit) or lower max_connections"
    )]
    TooLow { hard: u64, need: u64, why: String },
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; fails if that cannot cover `need`.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit(need: u64, why: &str) -> Result<u64, FdError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(FdError::Get(std::io::Error::last_os_error()));
    }
    let hard = lim.rlim_max;
    if lim.rlim_cur < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: as above; a failure leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = hard;
        }
    }
    let soft = lim.rlim_cur;
    if soft < need {
        return Err(FdError::TooLow {
            hard,
            need,
            why: why.to_string(),
        });
    }
    Ok(soft)
}
