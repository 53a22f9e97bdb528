"""The built-in cells, as .cell files: data read by lstm_graph.library."""
