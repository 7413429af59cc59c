//! Names for containers created without one: `<adjective>_<surname>`,
//! as dockerd makes them (its own word lists are not copied; these are
//! ours), with a digit appended on a clash.

/// Moods and qualities.
const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious", "daring",
    "eager", "epic", "fervent", "gentle", "glad", "happy", "jolly", "keen", "kind", "lucid",
    "merry", "nimble", "noble", "patient", "plucky", "quick", "quiet", "serene", "sharp", "steady",
    "sunny", "swift", "tender", "upbeat", "vivid", "warm", "wise", "witty", "zealous",
];

/// Scientists, engineers and explorers.
const SURNAMES: &[&str] = &[
    "agnesi",
    "babbage",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermi",
    "franklin",
    "galileo",
    "gauss",
    "goodall",
    "hamilton",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "newton",
    "noether",
    "pasteur",
    "ramanujan",
    "ritchie",
    "sagan",
    "shannon",
    "thompson",
    "tesla",
    "turing",
    "volta",
    "wozniak",
    "yalow",
];

/// A name `taken` does not refuse.
pub fn generate(taken: impl Fn(&str) -> bool) -> String {
    let mut attempt = 0u32;
    loop {
        let pick = uuid::Uuid::new_v4().as_u128();
        let adjective = ADJECTIVES[(pick % ADJECTIVES.len() as u128) as usize];
        let surname = SURNAMES[((pick >> 64) % SURNAMES.len() as u128) as usize];
        let name = if attempt < 8 {
            format!("{adjective}_{surname}")
        } else {
            format!("{adjective}_{surname}{}", pick % 10)
        };
        if !taken(&name) {
            return name;
        }
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_names_are_valid_and_avoid_taken_ones() {
        let name = super::generate(|_| false);
        assert!(super::super::registry::check_name(&name).is_ok(), "{name}");
        let first = super::generate(|_| false);
        let other = super::generate(|n| n == first);
        assert_ne!(first, other);
    }
}
