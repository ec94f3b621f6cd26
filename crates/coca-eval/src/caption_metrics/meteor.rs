//! METEOR 1.5 through the reference jar, driven exactly as pycocoevalcap drives it.
//!
//! METEOR 1.5 (`-l en -norm`) aligns words by exact match, Snowball stem, WordNet synonym and a 62 MB
//! paraphrase table, then scores fragmentation with tuned English parameters. Porting it would mean
//! shipping its LGPL-licensed data files (the paraphrase table and synonym database) in this MIT
//! project, and an exact+stem-only port would differ from the published numbers. So METEOR is
//! computed by running the same `meteor-1.5.jar` pycocoevalcap ships, when the caller points to it
//! and Java is available; otherwise it is reported as absent.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::EvalError;

/// Where to find `java` and `meteor-1.5.jar` (e.g. the jar inside an installed pycocoevalcap:
/// `site-packages/pycocoevalcap/meteor/meteor-1.5.jar`, with its `data/paraphrase-en.gz` beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteorJar {
    /// The Java executable (`java` looks it up on `PATH`).
    pub java: PathBuf,
    /// Path to `meteor-1.5.jar`.
    pub jar: PathBuf,
}

impl MeteorJar {
    /// Uses `java` from `PATH` and the given jar.
    pub fn new(jar: impl Into<PathBuf>) -> Self {
        Self {
            java: PathBuf::from("java"),
            jar: jar.into(),
        }
    }

    /// The jar named by the environment variable `COCA_METEOR_JAR`, if it is set and the file exists.
    pub fn from_env() -> Option<Self> {
        let jar = PathBuf::from(std::env::var_os("COCA_METEOR_JAR")?);
        jar.is_file().then(|| Self::new(jar))
    }

    /// Corpus and per-image METEOR of tokenised captions.
    pub(crate) fn score(&self, pairs: &[(&str, &[String])]) -> Result<(f64, Vec<f64>), EvalError> {
        let mut child = self.spawn()?;
        let result = self.exchange(&mut child, pairs);
        // The process has done its job (or failed); it is ours to end.
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    fn spawn(&self) -> Result<Child, EvalError> {
        let dir = self.jar.parent().filter(|d| !d.as_os_str().is_empty());
        let mut cmd = Command::new(&self.java);
        cmd.arg("-jar")
            .arg("-Xmx2G")
            .arg(&self.jar)
            .args(["-", "-", "-stdio", "-l", "en", "-norm"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // pycocoevalcap runs the jar from its own directory; do the same so relative data paths agree.
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.spawn().map_err(|source| EvalError::MeteorSpawn {
            java: self.java.clone(),
            jar: self.jar.clone(),
            source,
        })
    }

    fn exchange(
        &self,
        child: &mut Child,
        pairs: &[(&str, &[String])],
    ) -> Result<(f64, Vec<f64>), EvalError> {
        let io_err = |what: &str, e: std::io::Error| self.protocol(format!("{what}: {e}"));
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| self.protocol("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| self.protocol("no stdout".into()))?;
        let mut stdout = BufReader::new(stdout);
        let read_line = |stdout: &mut BufReader<_>| -> Result<String, EvalError> {
            let mut line = String::new();
            let n = stdout
                .read_line(&mut line)
                .map_err(|e| io_err("reading", e))?;
            if n == 0 {
                return Err(self.protocol("the jar closed its output early".into()));
            }
            Ok(line.trim().to_string())
        };
        let mut eval_line = String::from("EVAL");
        for (candidate, refs) in pairs {
            let hyp = candidate.replace("|||", "").replace("  ", " ");
            let line = format!("SCORE ||| {} ||| {}\n", refs.join(" ||| "), hyp);
            stdin
                .write_all(line.as_bytes())
                .map_err(|e| io_err("writing", e))?;
            stdin.flush().map_err(|e| io_err("writing", e))?;
            let stats = read_line(&mut stdout)?;
            eval_line.push_str(" ||| ");
            eval_line.push_str(&stats);
        }
        eval_line.push('\n');
        stdin
            .write_all(eval_line.as_bytes())
            .map_err(|e| io_err("writing", e))?;
        stdin.flush().map_err(|e| io_err("writing", e))?;
        let parse = |s: String| -> Result<f64, EvalError> {
            s.parse::<f64>()
                .map_err(|_| self.protocol(format!("expected a score, got {s:?}")))
        };
        let mut per_image = Vec::with_capacity(pairs.len());
        for _ in pairs {
            per_image.push(parse(read_line(&mut stdout)?)?);
        }
        let corpus = parse(read_line(&mut stdout)?)?;
        Ok((corpus, per_image))
    }

    fn protocol(&self, message: String) -> EvalError {
        EvalError::MeteorProtocol {
            jar: self.jar.clone(),
            message,
        }
    }
}
