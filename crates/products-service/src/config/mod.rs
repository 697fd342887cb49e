//! Typed configuration: `config/default.yaml`, then an optional override
//! file, then environment variables. Loaded once at startup into [`Settings`];
//! nothing else in the service reads the environment.
//!
//! [`settings`] declares the typed settings, [`load`] reads them (defaults,
//! file, environment), [`secrets`] holds credentials and resolves `*_file`
//! settings.

mod load;
mod secrets;
mod settings;

pub use self::{
    secrets::{read_secret_file, Credentials, ExposeSecret, SecretFileError, SecretString},
    settings::*,
};

/// An explicit environment for [`Settings::load_from`] in tests.
#[cfg(test)]
fn test_env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
