"""Deployment: writing a trained checkpoint as the files users deploy with, and reading them back.

  exporter         export.py's logic: frozen graph, SavedModel, TFLite float32/float16/int8, ONNX, each
                   checked against the checkpoint on real images before it is renamed into place
  runtimes         runs a checkpoint or any exported file behind one interface (test.py, predict.py, bench)
  file_evaluation  test.py's validation on an exported file
  outputs          where an export may write (never over an input, never over a file without --overwrite),
                   through a temporary name, so a failed export leaves nothing half-written
"""
