//! A lease's terms from the outside world, checked once at the edge: the value a holder
//! publishes, bounded in size and depth, and its lock-delay, bounded by the server's maximum.

use serde_json::Value;

use super::rules::LeaseTerms;
use super::{Engine, LockError};

/// The largest value a lock carries, in bytes of its compact JSON. A value says where to reach
/// a leader or what a holder is doing, not the data itself: it is stored in the lock's document,
/// which every decision reads and writes whole, and shown in every status, list and watch.
pub const MAX_VALUE_BYTES: usize = 4096;
/// The deepest a value may nest arrays and objects (`[[1]]` is 2). JSON parsers in clients
/// (and serde_json's own, at 128) stop at some depth; a lock's value stays far from any.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Checks a value against [`MAX_VALUE_DEPTH`] and [`MAX_VALUE_BYTES`].
pub fn check_value(value: &Value) -> Result<(), String> {
    // Depth first, without recursion, so that the size is measured only of a value known to be
    // shallow (serialising recurses).
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let depth = depth + 1;
        if depth > MAX_VALUE_DEPTH {
            return Err(format!(
                "nests arrays and objects deeper than {MAX_VALUE_DEPTH} levels"
            ));
        }
        stack.extend(children.map(|c| (c, depth)));
    }
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?.len();
    if bytes > MAX_VALUE_BYTES {
        return Err(format!(
            "is {bytes} bytes of compact JSON, more than the {MAX_VALUE_BYTES} allowed"
        ));
    }
    Ok(())
}

impl Engine {
    /// The terms of a lease from a request's fields, or the field that is wrong.
    pub(super) fn lease_terms(
        &self,
        ttl: u64,
        value: Option<Value>,
        lock_delay: Option<i64>,
    ) -> Result<LeaseTerms, LockError> {
        if let Some(value) = &value {
            check_value(value).map_err(|r| LockError::invalid("value", r))?;
        }
        let max = self.config.max_lock_delay;
        let lock_delay = match lock_delay {
            None => None,
            Some(d) if d >= 0 && d.unsigned_abs() <= max => Some(d.unsigned_abs()),
            Some(d) => {
                return Err(LockError::invalid(
                    "lock_delay",
                    format!("{d} is out of range: a lock-delay is 0 to {max} seconds"),
                ))
            }
        };
        Ok(LeaseTerms {
            ttl,
            value,
            lock_delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| json!([v]))
    }

    #[test]
    fn a_value_of_4096_compact_bytes_is_taken_and_one_more_is_refused() {
        assert!(check_value(&json!("x".repeat(4094))).is_ok());
        let err = check_value(&json!("x".repeat(4095))).unwrap_err();
        assert!(err.contains("4097 bytes"), "{err}");
    }

    #[test]
    fn a_value_is_measured_compact_whatever_its_escapes_in_the_request() {
        // Two bytes each in UTF-8, as serde_json writes them (a client may send \u00e9).
        assert!(check_value(&json!("é".repeat(2047))).is_ok());
        assert!(check_value(&json!("é".repeat(2048))).is_err());
    }

    #[test]
    fn a_value_nested_32_deep_is_taken_and_33_is_refused() {
        assert!(check_value(&nested(32)).is_ok());
        let err = check_value(&nested(33)).unwrap_err();
        assert!(err.contains("deeper than 32"), "{err}");
        let object = (0..33).fold(json!(null), |v, _| json!({"k": v}));
        assert!(check_value(&object).is_err());
    }

    #[test]
    fn a_value_nested_far_past_any_parser_is_refused_without_overflowing_the_stack() {
        let mut deep = Value::Null;
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        assert!(check_value(&deep).is_err());
        // Dropping it recurses in serde_json; unwind it by hand.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn scalars_and_null_are_values_too() {
        for v in [
            json!(null),
            json!(true),
            json!(1.5),
            json!("s"),
            json!([]),
            json!({}),
        ] {
            assert!(check_value(&v).is_ok(), "{v}");
        }
    }
}
