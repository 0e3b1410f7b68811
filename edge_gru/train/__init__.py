"""Desktop-side tools: Keras import, training and TFLite conversion.

This package is the only place in edge-gru that uses TensorFlow/Keras (install the
``train`` extra), and :mod:`edge_gru.train.tfruntime` the only module that imports them.
Importing ``edge_gru.train`` itself stays light; TensorFlow loads when it is used.
"""
