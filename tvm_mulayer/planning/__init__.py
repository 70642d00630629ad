"""The planning layer: profiling kernels, the latency predictor trained on the profiles, the
partitioner that chooses a Plan with it, and the tables and timelines that show a plan."""
