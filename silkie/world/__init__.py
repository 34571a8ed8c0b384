"""The mini world: procedurally drawn scenes with known ground truth, tasks about them,
tiny real VLMs and a grounded judge — every stage of the real loop runs on it unchanged."""
