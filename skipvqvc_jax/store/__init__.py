"""What is kept on disk or in a bucket: checkpoints and model directories, the original's state dicts and .pt files, published weights, TensorBoard summaries."""
