//! Password hashing: argon2id with the crate's default parameters (19 MiB, 2 passes), PHC
//! strings.
//!
//! Hashes run on a fixed pool of hashing threads, one per core (a hash takes tens of
//! milliseconds of CPU on purpose), and each thread reuses one 19 MiB block buffer for every
//! hash it computes. A burst of logins and registrations queues for the pool instead of taking
//! a thread and 19 MiB each, and the memory of hashing stays the pool's — cores × 19 MiB,
//! allocated once — whatever the burst. (Hashing on Tokio's blocking pool instead allocated the
//! 19 MiB afresh in whichever of its up to 512 threads ran it; the allocator kept the freed
//! blocks in per-thread arenas, and a burst of 1,000 logins left the process hundreds of MiB
//! larger for good.)

use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::ServiceError;

/// The largest memory cost (KiB) a stored hash may ask for: a hash from elsewhere with a
/// larger one is refused (verification fails) rather than growing a thread's buffer.
const MAX_M_COST: u32 = 64 * 1024;

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads and their queue.
struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    for i in 0..threads {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || {
                let mut memory: Vec<Block> = Vec::new();
                loop {
                    let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = job else { return };
                    // A job that panics loses its answer (its caller gets an error), not the
                    // thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut memory);
                    }));
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password hashing thread");
        }
    }
    Pool {
        jobs: Mutex::new(tx),
    }
});

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Database(sqlx::Error::Protocol(format!("password hashing: {e}")))
}

/// Runs `f` on a hashing thread with that thread's block buffer.
async fn on_pool<T: Send + 'static>(
    f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, ServiceError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |memory| {
        let _ = tx.send(f(memory));
    });
    POOL.jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(job)
        .map_err(|_| internal("no hashing thread is running"))?;
    rx.await.map_err(|_| internal("the hashing thread failed"))
}

/// `memory` with room for `params`' blocks (grown once, then reused).
fn blocks<'a>(memory: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let n = params.block_count();
    if memory.len() < n {
        memory.resize(n, Block::default());
    }
    &mut memory[..n]
}

/// Computes argon2 of `password` and `salt` into `out`, in `memory`.
fn compute(
    hasher: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    hasher.hash_password_into_with_memory(password, salt, out, blocks(memory, params))
}

/// The PHC string of `password` with `salt`, computed in `memory`.
fn hash_with(
    password: &[u8],
    salt: &[u8],
    memory: &mut Vec<Block>,
) -> Result<String, ServiceError> {
    let params = Params::default();
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(&hasher, &params, password, salt, &mut out, memory).map_err(internal)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(internal)?,
        salt: Some(Salt::new(salt).map_err(internal)?),
        hash: Some(Output::new(&out).map_err(internal)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory` (false for a
/// malformed hash or one asking for more than [`MAX_M_COST`]).
fn verify_with(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(algorithm, version, params.clone());
    if compute(&hasher, &params, password, salt.as_ref(), &mut out, memory).is_err() {
        return false;
    }
    // `Output`'s comparison takes the same time whatever the bytes.
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// The PHC string of `password`, with a fresh random salt.
///
/// # Errors
/// When the hasher fails (no randomness) or its thread does.
pub async fn hash(password: String) -> Result<String, ServiceError> {
    let salt = argon2::password_hash::try_generate_salt().map_err(internal)?;
    on_pool(move |memory| hash_with(password.as_bytes(), &salt, memory)).await?
}

/// Whether `password` matches the PHC string `stored` (false for a malformed one).
///
/// # Errors
/// When the hashing thread fails.
pub async fn verify(password: String, stored: String) -> Result<bool, ServiceError> {
    on_pool(move |memory| verify_with(password.as_bytes(), &stored, memory)).await
}

/// A hash that no password matches, verified against when the login names no user, so that
/// an unknown name costs as much time as a wrong password.
pub const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0p2yTf5Yr3fJ0h+kqJxk4bV8W0N0m8cUq3wz1ZC6bK8";

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[test]
    fn the_decoy_is_a_well_formed_hash() {
        assert!(PasswordHash::new(DECOY).is_ok());
    }

    /// Threads of this process whose name starts with `prefix` (Linux).
    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|name| name.starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_hashes_runs_on_the_fixed_pool() {
        let burst: Vec<_> = (0..32)
            .map(|i| tokio::spawn(hash(format!("password {i}"))))
            .collect();
        for h in burst {
            assert!(h.await.expect("task").is_ok());
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        assert_eq!(
            threads_named("password-hash"),
            cores,
            "one hashing thread per core"
        );
    }

    #[tokio::test]
    async fn hashes_verify_here_and_with_the_crates_own_verifier_and_back() {
        let h = hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(
            verify("correct horse".into(), h.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify("wrong horse".into(), h.clone())
                .await
                .expect("verify")
        );
        // The same PHC strings as the crate's own hasher: old hashes keep verifying.
        let parsed = PasswordHash::new(&h).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"older password")
            .expect("hash")
            .to_string();
        assert!(
            verify("older password".into(), theirs.clone())
                .await
                .expect("verify")
        );
        assert!(!verify("other".into(), theirs).await.expect("verify"));
        // Other parameters (a cheaper hash from elsewhere) verify too; malformed ones fail.
        let cheap = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"pw")
        .expect("hash")
        .to_string();
        assert!(verify("pw".into(), cheap).await.expect("verify"));
        assert!(
            !verify("pw".into(), "not a hash".into())
                .await
                .expect("verify")
        );
        assert!(!verify("pw".into(), DECOY.into()).await.expect("verify"));
        let huge = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0p2yTf5Yr3fJ0h+kqJxk4bV8W0N0m8cUq3wz1ZC6bK8";
        assert!(!verify("pw".into(), huge.into()).await.expect("verify"));
    }
}
