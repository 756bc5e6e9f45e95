//! Which components of a service are connected, for `/readyz` and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A shared table of component name → up. A component registers itself as down when it starts
/// and reports up once connected (e.g. a consumer after `basic.consume` succeeded).
#[derive(Clone, Debug, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Health {
    /// Records the state of `component`.
    pub fn set(&self, component: &str, up: bool) {
        let mut map = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(component) {
            Some(state) => *state = up,
            None => {
                map.insert(component.to_owned(), up);
            }
        }
    }

    /// True when every registered component is up.
    pub fn all_up(&self) -> bool {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .all(|up| *up)
    }

    /// Every component with its state.
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
