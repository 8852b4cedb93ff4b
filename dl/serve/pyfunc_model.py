"""An inference bundle as an MLflow pyfunc model, by MLflow's "models from code": this file is the model's code
(logged beside the bundle, nothing pickled); ``load_context`` loads the bundle from the model's artifacts with its
hash checks, ``predict`` scores a column ``text`` (or a list of strings) as the scoring UDF does and returns
``label`` and one ``p_<class>`` per class. Logged by dl/serve/mlflow_model.py ``log_bundle_model``."""

from __future__ import annotations

import mlflow
import pandas as pd


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from dl.serve.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            column = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
            texts = column.tolist()
        else:
            texts = list(model_input)
        out = self.bundle.predict([t if isinstance(t, str) else "" for t in texts])
        return out.drop(columns=["model_version"])


mlflow.models.set_model(BundleModel())
