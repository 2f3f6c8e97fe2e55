//! Reading a model folder's JSON files into typed configs.

use std::path::Path;

use serde::de::DeserializeOwned;
use tessera_tensor::Activation;

use crate::error::{NnError, Result};

/// `path` parsed as `T`; fields `T` does not name are ignored.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_json(&text, path, what)
}

/// JSON `text` (the contents of `path`, which only labels messages: a file's name, or
/// `(in memory)`) parsed as `T`; fields `T` does not name are ignored.
pub fn parse_json<T: DeserializeOwned>(text: &str, path: &Path, what: &'static str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| NnError::Json {
        path: path.to_path_buf(),
        what,
        detail: e.to_string(),
    })
}

/// The activation a config names (`hidden_act`, `activation_function`), or an error naming the
/// field and the supported values.
pub fn activation(field: &str, name: &str) -> Result<Activation> {
    name.parse().map_err(|e: String| NnError::config(field, e))
}

/// Checks that `heads` divides `hidden` and gives a head size the attention kernel supports.
pub fn head_dim(field: &str, hidden: usize, heads: usize) -> Result<usize> {
    if heads == 0 || hidden % heads != 0 {
        return Err(NnError::config(
            field,
            format!("{heads} attention heads do not divide the hidden size {hidden}"),
        ));
    }
    let d = hidden / heads;
    if d > 128 {
        return Err(NnError::config(
            field,
            format!("head size {d} is above the 128 the attention kernel supports"),
        ));
    }
    Ok(d)
}

/// Checks that a size from the config is positive.
pub fn positive(field: &str, value: usize) -> Result<usize> {
    if value == 0 {
        return Err(NnError::config(field, "must be at least 1"));
    }
    Ok(value)
}

/// `dir/config.json` parsed as `T`, after checking that `dir` is a folder.
pub fn read_model_config<T: DeserializeOwned>(dir: &Path, what: &'static str) -> Result<T> {
    if !dir.is_dir() {
        return Err(NnError::Folder {
            dir: dir.to_path_buf(),
            detail: "no such model folder: point --model at a Hugging Face model folder \
                     (config.json, model.safetensors, ...)"
                .into(),
        });
    }
    read_json(&dir.join("config.json"), what)
}

/// The `config.json` of one model family.
pub trait ModelConfig: DeserializeOwned {
    /// The `model_type` this family's checkpoints have.
    const MODEL_TYPE: &'static str;
    /// The family, in messages ("ViT").
    const NAME: &'static str;

    /// The file's `model_type`, if it has one.
    fn model_type(&self) -> Option<&str>;

    /// Refuses values the model cannot run (the model type is checked before).
    fn check(&self) -> Result<()>;

    /// The model type, then [`ModelConfig::check`].
    fn validate(&self) -> Result<()> {
        if let Some(t) = self.model_type().filter(|t| *t != Self::MODEL_TYPE) {
            return Err(NnError::config(
                "model_type",
                format!(
                    "'{t}' is not a {} checkpoint (expected '{}')",
                    Self::NAME,
                    Self::MODEL_TYPE
                ),
            ));
        }
        self.check()
    }

    /// `config.json` in `dir`, parsed and validated.
    fn load(dir: &Path) -> Result<Self> {
        let config: Self = read_model_config(dir, "model config")?;
        config.validate()?;
        Ok(config)
    }

    /// A `config.json`'s text (what a browser fetched), parsed and validated.
    fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_json(text, Path::new("config.json"), "model config")?;
        config.validate()?;
        Ok(config)
    }
}
