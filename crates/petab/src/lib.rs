//! # medtwin-petab
//!
//! PEtab calibration problems: tables, observables, noise models, log-likelihood and fits over SBML models.
