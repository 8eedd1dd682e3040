"""Measuring a model: the pairs it converts, the metrics, the speech recogniser, the listening figures and the HTML report."""
