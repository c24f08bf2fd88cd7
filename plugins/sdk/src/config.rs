//! The stage's `config` table from the pipeline TOML, as JSON text.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone)]
pub struct Config {
    json: String,
}

impl Config {
    pub fn new(json: String) -> Self {
        Self { json }
    }

    /// The raw JSON text (empty when the stage has no config).
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Deserialises the config. No config (empty text or `null`) reads as `{}`,
    /// so a struct with `#[serde(default)]` gets its defaults. Errors name the
    /// offending key path (`bbox.min_lon: invalid type …`); use
    /// `#[serde(deny_unknown_fields)]` to catch typos.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let text = self.json.trim();
        let text = if text.is_empty() || text == "null" { "{}" } else { text };
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("invalid config: {}", e.inner())
            } else {
                format!("invalid config at {path}: {}", e.inner())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields)]
    struct C {
        inner: Inner,
    }
    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn parse_names_the_key_path_and_defaults_empty() {
        assert_eq!(Config::new(String::new()).parse::<C>().unwrap().inner.n, 0);
        let e = Config::new(r#"{"inner": {"n": "x"}}"#.into()).parse::<C>().unwrap_err();
        assert!(e.starts_with("invalid config at inner.n:"), "{e}");
    }
}
