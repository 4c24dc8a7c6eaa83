//! # medtwin-cardiac
//!
//! Cardiac electrophysiology twins: the CiPA IKr-dynamic O'Hara-Rudy ventricular myocyte, drug block and the qNet proarrhythmia assay.
