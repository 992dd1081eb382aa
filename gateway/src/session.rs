//! Session ids: the handle a client presents (`auth.session`) to resume
//! where it left off. Issued in `connected`.

/// A fresh, unguessable session id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
