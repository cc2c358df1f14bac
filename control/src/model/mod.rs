//! The resource model: the registry of served kinds (group, version, kind, plural,
//! scope, verbs, short names, categories, subresources), typed admission through
//! `k8s-openapi`, defaulting and table columns.
//!
//! **Every kind the API serves is one `ResourceType` entry; handlers are generic over
//! it, never written per kind.**

pub mod defaults;
pub mod podspec;
pub mod registry;
pub mod scaling;
pub mod validate;

pub use registry::{Registry, ResourceType};
