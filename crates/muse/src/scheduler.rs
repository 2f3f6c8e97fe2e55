//! diffusers' `AmusedScheduler`: which tokens stay masked after each step.
//!
//! Each step draws a token for every masked position (on the GPU, [`Tensor::sample_rows`]),
//! then re-masks the least confident draws: confidence is `log p + temperature · Gumbel noise`,
//! and the `mask_len` lowest stay masked, `mask_len` following the masking schedule.
//!
//! [`Tensor::sample_rows`]: tessera_tensor::Tensor::sample_rows

use std::path::Path;

use serde::Deserialize;
use tessera_nn::config::{parse_json, read_json};
use tessera_nn::{NnError, Result};

/// How many tokens stay masked after step `i` of `n`: `cos(π/2 · (i+1)/n)` or `1 − (i+1)/n` of
/// them.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MaskingSchedule {
    /// `cos(π/2 · r)`.
    Cosine,
    /// `1 − r`.
    Linear,
}

/// `scheduler/scheduler_config.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct AmusedScheduler {
    /// The id of the mask token.
    pub mask_token_id: u32,
    /// The masking schedule.
    #[serde(default = "cosine")]
    pub masking_schedule: MaskingSchedule,
}

fn cosine() -> MaskingSchedule {
    MaskingSchedule::Cosine
}

/// `torch.linspace(start, end, n)` in f32, computed as torch does (from the start for the first
/// half, from the end for the second).
pub fn linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// Gumbel noise from a uniform, as diffusers' `gumbel_noise`.
fn gumbel(u: f32) -> f32 {
    -(-(u.max(1e-20)).ln()).max(1e-20).ln()
}

impl AmusedScheduler {
    /// `dir/scheduler_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        read_json(&dir.join("scheduler_config.json"), "AmusedScheduler config")
    }

    /// A `scheduler_config.json`'s text (what a browser fetched).
    pub fn from_json(text: &str) -> Result<Self> {
        parse_json(
            text,
            Path::new("scheduler_config.json"),
            "AmusedScheduler config",
        )
    }

    /// The fraction of tokens masked after step `index` (0-based) of `steps`.
    pub fn mask_ratio(&self, index: usize, steps: usize) -> f32 {
        let ratio = (index + 1) as f32 / steps as f32;
        match self.masking_schedule {
            MaskingSchedule::Cosine => (ratio * std::f32::consts::PI / 2.0).cos(),
            MaskingSchedule::Linear => 1.0 - ratio,
        }
    }

    /// One step for one image, in place: `sample` (its `seq` token ids, masked ones equal to
    /// the mask token) takes the drawn tokens `drawn` (with probabilities `probs`) at its
    /// masked positions; unless this is the last step, the `mask_len` least confident of
    /// them are masked again, with Gumbel noise from `gumbel_uniforms` scaled by
    /// `temperature`. Returns the prediction of every token (`pred_original_sample`).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        index: usize,
        steps: usize,
        sample: &mut [u32],
        drawn: &[u32],
        probs: &[f32],
        gumbel_uniforms: &[f32],
        temperature: f32,
    ) -> Result<Vec<u32>> {
        let seq = sample.len();
        if drawn.len() != seq || probs.len() != seq || gumbel_uniforms.len() != seq {
            return Err(NnError::Input(format!(
                "a scheduler step over {seq} tokens got {} draws, {} probabilities, {} uniforms",
                drawn.len(),
                probs.len(),
                gumbel_uniforms.len()
            )));
        }
        if index >= steps {
            return Err(NnError::Input(format!("step {index} of {steps}")));
        }
        let mask = self.mask_token_id;
        let unknown: Vec<bool> = sample.iter().map(|&t| t == mask).collect();
        let pred: Vec<u32> = sample
            .iter()
            .zip(drawn)
            .zip(&unknown)
            .map(|((&s, &d), &u)| if u { d } else { s })
            .collect();
        if index + 1 == steps {
            sample.copy_from_slice(&pred);
            return Ok(pred);
        }
        let unknown_count = unknown.iter().filter(|&&u| u).count() as f32;
        let mask_len = (seq as f32 * self.mask_ratio(index, steps)).floor();
        let mask_len = mask_len.min(unknown_count - 1.0).max(1.0) as usize;
        let confidence: Vec<f32> = probs
            .iter()
            .zip(&unknown)
            .zip(gumbel_uniforms)
            .map(|((&p, &u), &g)| {
                let p = if u { p } else { f32::MAX };
                p.max(1e-20).ln() + temperature * gumbel(g)
            })
            .collect();
        let mut sorted = confidence.clone();
        sorted.sort_by(f32::total_cmp);
        let cut_off = sorted[mask_len.min(seq - 1)];
        for ((s, &p), &c) in sample.iter_mut().zip(&pred).zip(&confidence) {
            *s = if c < cut_off { mask } else { p };
        }
        Ok(pred)
    }
}
