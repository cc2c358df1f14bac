//! Jobs: a new Job without `manualSelector` selects its own pods by its uid.

use serde_json::Value;

use crate::model::defaults;

use super::strategy::Strategy;

/// The Job strategy.
pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn complete_create(&self, obj: &mut Value) {
        defaults::job_selector(obj);
    }
}
