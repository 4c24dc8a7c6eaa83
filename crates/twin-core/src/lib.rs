//! # medtwin-twin-core
//!
//! Model-agnostic digital-twin lifecycle: calibration spec, fit, update, forecast, what-if, backtest, save/load.
