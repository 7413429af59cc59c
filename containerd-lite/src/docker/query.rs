//! Query strings as dockerd reads them: repeated keys (`names=a&names=b`),
//! its lenient booleans, and the JSON `filters` parameter in both of the
//! shapes clients send (`{"key":{"value":true}}` and the older
//! `{"key":["value"]}`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::{Error, Result};

/// A request's query parameters, in order.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (`None`: no query).
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|raw| {
                form_urlencoded::parse(raw.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Query { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or "" when absent.
    pub fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean flag as dockerd reads one: absent, "", "0", "no",
    /// "false" and "none" are false; any other value is true.
    pub fn flag(&self, key: &str) -> bool {
        let value = self.str(key).trim().to_ascii_lowercase();
        !matches!(value.as_str(), "" | "0" | "no" | "false" | "none")
    }

    /// The `filters` parameter, checked against the keys the endpoint
    /// knows.
    pub fn filters(&self, known: &[&str]) -> Result<Filters> {
        let filters = Filters::parse(self.str("filters"))?;
        filters.validate(known)?;
        Ok(filters)
    }
}

/// Parsed `filters`: each key with its set of values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    by_key: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Values {
    Map(BTreeMap<String, bool>),
    List(Vec<String>),
}

impl Filters {
    /// Parses the JSON of a `filters` parameter; "" is no filter.
    pub fn parse(json: &str) -> Result<Filters> {
        if json.trim().is_empty() {
            return Ok(Filters::default());
        }
        let raw: BTreeMap<String, Values> = serde_json::from_str(json)
            .map_err(|err| Error::invalid(format!("invalid filters {json:?}: {err}")))?;
        let by_key = raw
            .into_iter()
            .map(|(key, values)| {
                let values = match values {
                    Values::Map(map) => map
                        .into_iter()
                        .filter(|(_, on)| *on)
                        .map(|(v, _)| v)
                        .collect(),
                    Values::List(list) => list.into_iter().collect(),
                };
                (key, values)
            })
            .collect();
        Ok(Filters { by_key })
    }

    /// Refuses a key the endpoint does not know, as dockerd does.
    pub fn validate(&self, known: &[&str]) -> Result<()> {
        match self
            .by_key
            .keys()
            .find(|key| !known.contains(&key.as_str()))
        {
            Some(key) => Err(Error::invalid(format!("invalid filter '{key}'"))),
            None => Ok(()),
        }
    }

    /// The values given for `key` (none when the key is absent).
    pub fn values(&self, key: &str) -> impl Iterator<Item = &str> + '_ {
        self.by_key
            .get(key)
            .into_iter()
            .flat_map(|values| values.iter().map(String::as_str))
    }

    /// Whether `key` was given with at least one value.
    pub fn contains(&self, key: &str) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|values| !values.is_empty())
    }

    /// A boolean filter (`dangling=true`): `None` when absent; a value
    /// other than true/false/1/0 is refused.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        let mut answer = None;
        for value in self.values(key) {
            let parsed = match value.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "invalid filter '{key}={value}': expected true or false"
                    )))
                }
            };
            answer = Some(answer.unwrap_or(false) || parsed);
        }
        Ok(answer)
    }

    /// Whether `labels` satisfy every `label` filter (`key` or
    /// `key=value`); true when there is none.
    pub fn labels_match(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key).all(|wanted| match wanted.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(wanted),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_flags() {
        let query = Query::parse(Some("names=a&names=b%2Fc&force=1&noprune=false&quiet=0"));
        assert_eq!(query.all("names"), ["a", "b/c"]);
        assert!(query.flag("force"));
        assert!(!query.flag("noprune"));
        assert!(!query.flag("quiet"));
        assert!(!query.flag("absent"));
    }

    #[test]
    fn both_filter_shapes_parse() {
        let map = Filters::parse(r#"{"dangling":{"true":true},"label":{"a=b":true}}"#).unwrap();
        let list = Filters::parse(r#"{"dangling":["true"],"label":["a=b"]}"#).unwrap();
        assert_eq!(map, list);
        assert_eq!(map.bool("dangling").unwrap(), Some(true));
        let labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        assert!(map.labels_match("label", &labels));
        assert!(!map.labels_match("label", &BTreeMap::new()));
    }

    #[test]
    fn unknown_keys_bad_json_and_bad_booleans_are_refused() {
        let err = Query::parse(Some("filters=%7B%22nope%22%3A%5B%22x%22%5D%7D"))
            .filters(&["dangling"])
            .unwrap_err();
        assert_eq!(err.message, "invalid filter 'nope'");
        assert!(Filters::parse("{not json").is_err());
        let err = Filters::parse(r#"{"dangling":["maybe"]}"#)
            .unwrap()
            .bool("dangling")
            .unwrap_err();
        assert!(err.message.contains("dangling=maybe"), "{}", err.message);
    }
}
