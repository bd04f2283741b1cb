"""Hot-vocabulary draft heads: coverage, step time, acceptance and speed per V; the calibration. See README.md."""
