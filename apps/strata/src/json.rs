//! Reading and writing JSON results without panicking paths.

use serde_json::Value;

/// A field of a JSON object; `Null` when it is absent or `value` is not an
/// object.
pub(crate) fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// Sets a field of a JSON object (nothing happens to a non-object).
pub(crate) fn set(value: &mut Value, key: &str, field: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_owned(), field);
    }
}
