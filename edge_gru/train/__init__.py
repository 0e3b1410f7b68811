"""Desktop-side tools: Keras import, training and TFLite conversion.

This package is the only place in edge-gru that imports TensorFlow/Keras (install the
``train`` extra). Importing ``edge_gru.train`` itself stays light; each module imports
TensorFlow when it is used.
"""
