//! Learning-rate schedules of open_clip (`--lr-scheduler`), as pure functions of the step.

use serde::{Deserialize, Serialize};

/// The shape of the learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Half a cosine from the base rate to zero over the remaining steps (open_clip's default).
    Cosine,
    /// The base rate until the end.
    Const,
    /// The base rate, then a linear decay to zero over the last `cooldown_steps` (open_clip's `const-cooldown`).
    ConstCooldown,
    /// A straight line from the base rate to zero.
    Linear,
}

/// A learning-rate schedule: linear warmup from `base_lr / warmup` to `base_lr`, then `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Curve after warmup.
    pub kind: ScheduleKind,
    /// Peak learning rate (`--lr`).
    pub base_lr: f64,
    /// Warmup steps (`--warmup`).
    pub warmup: u64,
    /// Total optimiser steps of the run.
    pub total: u64,
    /// Steps of the final decay for [`ScheduleKind::ConstCooldown`].
    pub cooldown_steps: u64,
}

impl Schedule {
    /// The learning rate of optimiser step `step` (0-based), as open_clip's scheduler sets it before that step.
    pub fn lr(&self, step: u64) -> f64 {
        let (step, base) = (step as f64, self.base_lr);
        if step < self.warmup as f64 {
            return base * (step + 1.0) / self.warmup as f64;
        }
        let total = self.total as f64;
        match self.kind {
            ScheduleKind::Const => base,
            ScheduleKind::Cosine => {
                let e = step - self.warmup as f64;
                let es = total - self.warmup as f64;
                if es <= 0.0 {
                    return base;
                }
                0.5 * (1.0 + (std::f64::consts::PI * e / es).cos()) * base
            }
            ScheduleKind::Linear => {
                let es = total - self.warmup as f64;
                if es <= 0.0 {
                    return base;
                }
                base * (1.0 - (step - self.warmup as f64) / es).max(0.0)
            }
            ScheduleKind::ConstCooldown => {
                let start = total - self.cooldown_steps as f64;
                if step < start {
                    base
                } else {
                    let es = total - start;
                    base * (1.0 - (step - start) / es).max(0.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            base_lr: 1e-3,
            warmup: 10,
            total: 110,
            cooldown_steps: 20,
        }
    }

    #[test]
    fn warmup_is_linear_and_reaches_base_at_its_last_step() {
        let s = schedule(ScheduleKind::Cosine);
        assert!((s.lr(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr(9) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn cosine_matches_open_clip_formula() {
        let s = schedule(ScheduleKind::Cosine);
        assert!((s.lr(10) - 1e-3).abs() < 1e-15);
        assert!((s.lr(60) - 0.5e-3).abs() < 1e-12);
        assert!(s.lr(109) < 1e-6);
    }

    #[test]
    fn const_cooldown_and_linear_end_at_zero() {
        let c = schedule(ScheduleKind::ConstCooldown);
        assert_eq!(c.lr(89), 1e-3);
        assert!((c.lr(100) - 0.5e-3).abs() < 1e-12);
        let l = schedule(ScheduleKind::Linear);
        assert!((l.lr(60) - 0.5e-3).abs() < 1e-12);
        assert_eq!(schedule(ScheduleKind::Const).lr(109), 1e-3);
    }
}
