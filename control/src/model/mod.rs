//! The resource model: the kinds the API serves (group, version, kind, plural,
//! scope, verbs, short names, categories, subresources), typed admission through
//! `k8s-openapi`, defaulting, and what the storage layer, the HTTP layer and the
//! loops share about objects: API errors, selectors, metadata, managed fields and
//! scheduling predicates.
//!
//! **Every kind the API serves is one `ResourceType` entry; handlers are generic over
//! it, never written per kind. Nothing here does I/O.**

pub mod defaults;
pub mod fieldset;
pub mod kinds;
pub mod managed;
pub mod mergekeys;
pub mod meta;
pub mod podspec;
pub mod quota;
pub mod scaling;
pub mod scheduling;
pub mod selector;
pub mod status;
pub mod validate;

pub use kinds::{Registry, ResourceType};
