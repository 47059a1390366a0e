"""Transfer records to a served model: reading records, training, model files.

``dataset`` reads record files; ``train`` fits the model (scikit-learn, imported only
there, so the scheduler serves models without it); ``artifact`` reads and writes model
files and knows where the default model ships.
"""
