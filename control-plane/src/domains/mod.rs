//! Domains: the request model ([`spec`], with what a probe sends in [`request`] and the check
//! type in [`check`]) and their storage with the config change log ([`store`]); the tag rule
//! ([`tags`]).

pub mod check;
pub mod request;
pub mod spec;
pub mod store;
pub mod tags;

pub use spec::{DomainSpec, FieldErrors, Policy};
pub use store::{Domain, StoreError};
