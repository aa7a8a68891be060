"""Step script: classify every frame and write the verdict tables (rule predict)."""

import argparse
import logging

import h5py
import numpy as np

from virnuc_core.classify import classifier_for, predict_scores, write_predictions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True, help="features.h5 (ids, dnabert, esm)")
    p.add_argument("--classifier", required=True, help="classifier file, or 'tiny' (demo)")
    p.add_argument("--output", required=True, help="prediction_results.tsv")
    p.add_argument("--highest", required=True, help="prediction_results_highestscore.tsv")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with h5py.File(a.features, "r") as f:
        ids = f["ids"].asstr()[()].tolist()
        features = np.concatenate([f["dnabert"][()], f["esm"][()]], axis=1)  # DNABERT-S first
    scores = predict_scores(classifier_for(a.classifier, features.shape[1]), features)
    write_predictions(ids, scores, a.output, a.highest)
    logging.info(
        "%d frames classified, %d called virus", len(ids), int((scores.argmax(1) == 1).sum())
    )


if __name__ == "__main__":
    main()
