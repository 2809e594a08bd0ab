"""Chapter 09 · Explainable and trustworthy AI: attributions, their axioms, sanity checks, attacks.

``numpy_impl``  the references by hand in NumPy for a ReLU MLP (parameters keyed like a torch
                state_dict): logits and the input gradient of a chosen class logit (backward
                through the ReLU masks), saliency, gradient x input, SmoothGrad, Integrated
                Gradients with five quadrature rules and its completeness error, occlusion,
                a LIME-style weighted linear surrogate, permutation-sampling Shapley values and
                KernelSHAP's weights, Spearman's rank correlation, FGSM and PGD (L-infinity)
                with the cross-entropy gradient by hand.

Nothing here is imported on ``import dlcourse.xai``: import the module you need.
"""
