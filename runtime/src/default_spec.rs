//! The default `config.json` written by `berth spec`.
