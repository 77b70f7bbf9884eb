//! Domains: the request model ([`spec`]) and their storage with the config change log
//! ([`store`]).

pub mod spec;
pub mod store;

pub use spec::{DomainSpec, FieldErrors, Policy};
pub use store::{Domain, StoreError};
