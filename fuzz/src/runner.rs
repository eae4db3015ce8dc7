//! A fuzzing loop for stable Rust, for CI: replays a target's saved failures and corpus, then
//! mutates corpus inputs for a bounded time. Its only feedback is the [`Shape`] targets
//! return: an input of a shape not seen before joins the pool that mutations start from.
//!
//! Deterministic for a seed (`OVASABI_FUZZ_SEED`, printed when the run starts and on failure):
//! the same seed replays the same inputs in the same order. A failing input is written to
//! `fuzz/artifacts/<target>/`, and replayed first by every later run until it is fixed and
//! moved (or deleted).
//!
//! Environment: `OVASABI_FUZZ_SECS` (seconds of mutation per target, default
//! [`DEFAULT_SECS`]), `OVASABI_FUZZ_SEED`, `OVASABI_FUZZ_MAX_LEN` (longest mutated input,
//! default [`DEFAULT_MAX_LEN`]).

use std::collections::HashSet;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::{Shape, Target};

/// Seconds of mutation per target when `OVASABI_FUZZ_SECS` is not set: small enough for every
/// `cargo test` in a debug build.
pub const DEFAULT_SECS: f64 = 3.0;
/// Longest input the mutator makes (libFuzzer's default `-max_len`).
pub const DEFAULT_MAX_LEN: usize = 4096;
/// Inputs kept to mutate from, corpus included.
const POOL_CAP: usize = 1024;

/// How one run goes.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long to mutate, after the corpus.
    pub duration: Duration,
    pub seed: u64,
    /// Longest input the mutator makes (corpus files may be longer).
    pub max_len: usize,
    /// The directory holding `corpus/` and `artifacts/` (the `fuzz` crate's own).
    pub root: PathBuf,
}

impl Config {
    /// From the environment (see the module docs); an unreadable value is an error, not a
    /// silent default.
    ///
    /// # Errors
    /// The variable and what is wrong with its value.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secs = match var("OVASABI_FUZZ_SECS") {
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("OVASABI_FUZZ_SECS={s:?} is not a number of seconds"))?,
            None => DEFAULT_SECS,
        };
        let seed = match var("OVASABI_FUZZ_SEED") {
            Some(s) => {
                parse_u64(&s).ok_or_else(|| format!("OVASABI_FUZZ_SEED={s:?} is not a u64"))?
            }
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64),
        };
        let max_len = match var("OVASABI_FUZZ_MAX_LEN") {
            Some(s) => s
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("OVASABI_FUZZ_MAX_LEN={s:?} is not a length"))?,
            None => DEFAULT_MAX_LEN,
        };
        Ok(Self {
            duration: Duration::from_secs_f64(secs),
            seed,
            max_len,
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        })
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    /// Saved failures and corpus files replayed.
    pub replayed: usize,
    /// Executions, replay included.
    pub execs: u64,
    pub elapsed: Duration,
    /// Distinct shapes seen.
    pub shapes: usize,
    /// Inputs in the pool at the end.
    pub pool: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: {} execs in {secs:.1} s ({:.0}/s), {} replayed, {} shapes, pool {}, seed {:#x}",
            self.target,
            self.execs,
            self.execs as f64 / secs.max(1e-9),
            self.replayed,
            self.shapes,
            self.pool,
            self.seed
        )
    }
}

/// A broken property (or a panic): the input, and how to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    /// Execution that failed (1-based, replay included).
    pub exec: u64,
    pub message: String,
    pub input: Vec<u8>,
    /// Where the input is (a corpus file, or the artifact written for it).
    pub file: Option<PathBuf>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "fuzz target {} failed: {}", self.target, self.message)?;
        writeln!(f, "  execution {}, seed {:#x}", self.exec, self.seed)?;
        let shown = &self.input[..self.input.len().min(512)];
        writeln!(
            f,
            "  input ({} bytes): {:?}{}",
            self.input.len(),
            String::from_utf8_lossy(shown),
            if shown.len() < self.input.len() {
                "…"
            } else {
                ""
            }
        )?;
        match &self.file {
            Some(p) => writeln!(f, "  saved as {}", p.display())?,
            None => writeln!(f, "  (could not be saved)")?,
        }
        write!(
            f,
            "  replay: cargo test -p ovasabi-fuzz --test fuzz {} (saved failures run first), \
             or this run: OVASABI_FUZZ_SEED={:#x}",
            self.target, self.seed
        )
    }
}

/// Runs `target`: saved failures, then the corpus, then mutations until `config.duration`.
///
/// # Errors
/// The first failing input.
pub fn run(target: &'static Target, config: &Config) -> Result<Report, Box<Failure>> {
    let started = Instant::now();
    // Written straight to stderr, not captured by the test harness: if the process dies (a
    // stack overflow cannot be caught), the seed is still on screen.
    let _ = writeln!(
        std::io::stderr(),
        "ovasabi-fuzz {}: seed {:#x}, {:.1} s",
        target.name,
        config.seed,
        config.duration.as_secs_f64()
    );
    let mut fuzz = Fuzz {
        target,
        config,
        rng: Rng::new(config.seed ^ fnv(target.name.as_bytes())),
        execs: 0,
        shapes: HashSet::new(),
        pool: Vec::new(),
        fixed: 0,
    };

    let artifacts = config.root.join("artifacts").join(target.name);
    let corpus = config.root.join("corpus").join(target.name);
    let mut replayed = 0;
    for (dir, keep) in [(&artifacts, false), (&corpus, true)] {
        for (path, input) in read_dir(dir) {
            replayed += 1;
            let shape = fuzz
                .exec(&input)
                .map_err(|message| fuzz.failure(message, &input, Some(path)))?;
            if keep {
                fuzz.shapes.insert(shape);
                fuzz.pool.push(input);
            }
        }
    }
    fuzz.fixed = fuzz.pool.len();
    if fuzz.pool.is_empty() {
        fuzz.pool.push(Vec::new());
        fuzz.fixed = 1;
    }

    let deadline = Instant::now() + config.duration;
    while Instant::now() < deadline {
        for _ in 0..16 {
            let input = fuzz.mutant();
            match fuzz.exec(&input) {
                Ok(shape) => {
                    if fuzz.shapes.insert(shape) {
                        fuzz.keep(input);
                    }
                }
                Err(message) => {
                    let file = save(&artifacts, &input);
                    return Err(fuzz.failure(message, &input, file));
                }
            }
        }
    }
    Ok(Report {
        target: target.name,
        seed: config.seed,
        replayed,
        execs: fuzz.execs,
        elapsed: started.elapsed(),
        shapes: fuzz.shapes.len(),
        pool: fuzz.pool.len(),
    })
}

struct Fuzz<'a> {
    target: &'static Target,
    config: &'a Config,
    rng: Rng,
    execs: u64,
    shapes: HashSet<Shape>,
    pool: Vec<Vec<u8>>,
    /// The first `fixed` inputs of the pool (the corpus) are never evicted.
    fixed: usize,
}

impl Fuzz<'_> {
    fn exec(&mut self, input: &[u8]) -> Result<Shape, String> {
        self.execs += 1;
        let run = self.target.run;
        panic::catch_unwind(AssertUnwindSafe(|| run(input))).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic with a non-string payload".to_owned())
        })
    }

    fn failure(&self, message: String, input: &[u8], file: Option<PathBuf>) -> Box<Failure> {
        Box::new(Failure {
            target: self.target.name,
            seed: self.config.seed,
            exec: self.execs,
            message,
            input: input.to_vec(),
            file,
        })
    }

    fn keep(&mut self, input: Vec<u8>) {
        if self.pool.len() < POOL_CAP {
            self.pool.push(input);
        } else if self.fixed < POOL_CAP {
            let i = self.fixed + self.rng.below(POOL_CAP - self.fixed);
            self.pool[i] = input;
        }
    }

    fn pick(&mut self) -> &[u8] {
        let i = self.rng.below(self.pool.len());
        &self.pool[i]
    }

    /// A pool input with one to four mutations stacked.
    fn mutant(&mut self) -> Vec<u8> {
        let mut data = self.pick().to_vec();
        for _ in 0..1 + self.rng.below(4) {
            self.mutate(&mut data);
        }
        data.truncate(self.config.max_len);
        data
    }

    fn token(&mut self) -> &'static [u8] {
        let own = self.target.tokens;
        let json = if self.target.json {
            crate::json::TOKENS
        } else {
            &[]
        };
        let i = self.rng.below((own.len() + json.len()).max(1));
        own.get(i)
            .or_else(|| json.get(i - own.len()))
            .copied()
            .unwrap_or(b"")
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff\"\\{}[],:\r\n09-+e.$*\t ";
        let rng = &mut self.rng;
        let pos = |rng: &mut Rng, data: &[u8]| rng.below(data.len() + 1);
        match rng.below(if self.target.json { 14 } else { 12 }) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = pos(rng, data);
                let bytes: Vec<u8> = (0..1 + rng.below(8))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                data.splice(at..at, bytes);
            }
            3 if !data.is_empty() => {
                let at = rng.below(data.len());
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            4 if !data.is_empty() => {
                let from = rng.below(data.len());
                let end = (from + 1 + rng.below(64)).min(data.len());
                let chunk = data[from..end].to_vec();
                let at = pos(rng, data);
                data.splice(at..at, chunk);
            }
            5 => {
                let other = self.pick().to_vec();
                let rng = &mut self.rng;
                let cut = pos(rng, data);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 => {
                let other = self.pick().to_vec();
                let rng = &mut self.rng;
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(256)).min(other.len());
                let at = pos(rng, data);
                data.splice(at..at, other[from..end].iter().copied());
            }
            7 => {
                let t = self.token();
                let at = pos(&mut self.rng, data);
                data.splice(at..at, t.iter().copied());
            }
            8 => {
                // A run of digits (or the byte at a random place) becomes a token.
                let t = self.token();
                let rng = &mut self.rng;
                let mut at = pos(rng, data);
                let mut end = at;
                while at > 0 && data[at - 1].is_ascii_digit() {
                    at -= 1;
                }
                while end < data.len() && data[end].is_ascii_digit() {
                    end += 1;
                }
                data.splice(at..end, t.iter().copied());
            }
            9 => {
                // Deep nesting, long runs: a token repeated.
                let t = self.token();
                let rng = &mut self.rng;
                let most = if rng.below(4) == 0 { 2048 } else { 130 };
                let n = 1 + rng.below(most);
                let at = pos(rng, data);
                data.splice(at..at, t.iter().copied().cycle().take(t.len() * n));
            }
            10 if !data.is_empty() => {
                // A long run of one byte of the input (a long string, a long number).
                let b = data[rng.below(data.len())];
                let n = 1 + rng.below(4096);
                let at = pos(rng, data);
                data.splice(at..at, std::iter::repeat_n(b, n));
            }
            11 if !data.is_empty() => data.truncate(rng.below(data.len())),
            12 | 13 => self.mutate_json(data),
            _ => {
                let at = pos(rng, data);
                data.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
    }

    /// Edits a parsed document (the input's documents, one after the other): the mutants stay
    /// JSON, and so reach past the parser.
    fn mutate_json(&mut self, data: &mut Vec<u8>) {
        let mut docs: Vec<Value> = serde_json::Deserializer::from_slice(data)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect();
        if docs.is_empty() {
            docs.push(Value::Object(Map::new()));
        }
        let d = self.rng.below(docs.len());
        let doc = &mut docs[d];
        let n = count(doc);
        let donor = nth(doc, self.rng.below(n)).cloned().unwrap_or(Value::Null);
        let i = self.rng.below(n);
        let fresh = self.value(donor);
        let rng = &mut self.rng;
        if let Some(node) = nth_mut(doc, i) {
            match (rng.below(6), node) {
                (0, Value::Object(map)) if !map.is_empty() => {
                    let k = rng.below(map.len());
                    if let Some(key) = map.keys().nth(k).cloned() {
                        map.remove(&key);
                    }
                }
                (1, Value::Object(map)) => {
                    map.insert(KEYS[rng.below(KEYS.len())].to_owned(), fresh);
                }
                (2, Value::Array(items)) => {
                    let at = rng.below(items.len() + 1);
                    items.insert(at, fresh);
                }
                (3, node) => {
                    let inner = std::mem::take(node);
                    *node = if rng.below(2) == 0 {
                        Value::Array(vec![inner])
                    } else {
                        let mut m = Map::new();
                        m.insert(KEYS[rng.below(KEYS.len())].to_owned(), inner);
                        Value::Object(m)
                    };
                }
                (_, node) => *node = fresh,
            }
        }
        let mut out = Vec::with_capacity(data.len() + 16);
        for (i, doc) in docs.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            // Serialising a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut out, doc);
        }
        *data = out;
    }

    /// A small value, or `donor` (a subtree of the document).
    fn value(&mut self, donor: Value) -> Value {
        let rng = &mut self.rng;
        match rng.below(8) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => {
                let t = self.token();
                serde_json::from_slice(t).unwrap_or(Value::Null)
            }
            3 => Value::String(STRINGS[rng.below(STRINGS.len())].to_owned()),
            4 => Value::Object(Map::new()),
            5 => Value::Array(Vec::new()),
            _ => donor,
        }
    }
}

/// Member names the JSON mutations use: those the targets look for, and a few others.
const KEYS: &[&str] = &[
    "a",
    "b",
    "type",
    "name",
    "data",
    "scheduling",
    "features",
    "tags",
    "audit",
    "custom_rules",
    "service_specific",
    "knowledge_graph",
    "",
];

const STRINGS: &[&str] = &[
    "event",
    "ping",
    "vote",
    "a.b:c-d_e9",
    "",
    " ",
    "\u{0}",
    "é",
    "\u{10ffff}",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.values().map(count).sum(),
        _ => 0,
    }
}

/// The `i`-th node of `v` in pre-order.
fn nth(v: &Value, mut i: usize) -> Option<&Value> {
    if i == 0 {
        return Some(v);
    }
    i -= 1;
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return None,
    };
    for c in children {
        let n = count(c);
        if i < n {
            return nth(c, i);
        }
        i -= n;
    }
    None
}

fn nth_mut(v: &mut Value, mut i: usize) -> Option<&mut Value> {
    if i == 0 {
        return Some(v);
    }
    i -= 1;
    let children: Box<dyn Iterator<Item = &mut Value>> = match v {
        Value::Array(items) => Box::new(items.iter_mut()),
        Value::Object(map) => Box::new(map.values_mut()),
        _ => return None,
    };
    for c in children {
        let n = count(c);
        if i < n {
            return nth_mut(c, i);
        }
        i -= n;
    }
    None
}

/// The files of `dir`, by name (none when it does not exist).
fn read_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|data| (p, data)))
        .collect()
}

/// Writes a failing input as `crash-<hash>`; returns where.
fn save(dir: &Path, input: &[u8]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("crash-{:016x}", fnv(input)));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: small, fast, and enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded through splitmix64, so that nearby seeds give unrelated sequences (and 0 works).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(data: &[u8]) -> Shape {
        assert!(!data.windows(4).any(|w| w == b"boom"), "boom");
        data.len() as Shape
    }

    static TOY: Target = Target {
        name: "toy",
        run: toy,
        tokens: &[b"boom"],
        json: false,
    };

    #[test]
    fn finds_saves_and_replays_a_failure() {
        let root = std::env::temp_dir().join(format!("ovasabi-fuzz-runner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("corpus/toy")).expect("temp dir");
        std::fs::write(root.join("corpus/toy/seed"), b"a seed").expect("seed");
        let config = Config {
            duration: Duration::from_secs(10),
            seed: 7,
            max_len: 64,
            root: root.clone(),
        };
        let failure = run(&TOY, &config).expect_err("the token is found");
        assert_eq!(failure.message, "boom");
        let saved = failure.file.clone().expect("saved");
        assert_eq!(std::fs::read(&saved).expect("artifact"), failure.input);
        // The next run fails at once, on the saved input.
        let again = run(&TOY, &config).expect_err("replayed");
        assert_eq!((again.exec, again.file), (1, Some(saved)));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        for n in 1..1000 {
            let x = a.below(n);
            assert!(x < n);
            assert_eq!(x, b.below(n));
        }
        assert_eq!(Rng::new(0).below(0), 0);
    }
}
