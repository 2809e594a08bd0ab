"""Chapter 09 · Explainable and trustworthy AI: attributions, their axioms, sanity checks, attacks.

``numpy_impl``  the references by hand in NumPy for a ReLU MLP (parameters keyed like a torch
                state_dict): logits and the input gradient of a chosen class logit (backward
                through the ReLU masks), saliency, gradient x input, SmoothGrad, Integrated
                Gradients with five quadrature rules and its completeness error, occlusion,
                a LIME-style weighted linear surrogate, permutation-sampling Shapley values and
                KernelSHAP's weights, Spearman's rank correlation, FGSM and PGD (L-infinity)
                with the cross-entropy gradient by hand.
``torch_impl``  the course's two digits models (an MLP, chapter 05's CNN; cached) and the
                methods for any PyTorch model by autograd: the same attributions, occlusion,
                Grad-CAM with hooks; the model-randomization sanity check and deletion /
                insertion curves.
``trust``       adversarial examples (FGSM, PGD), accuracy against eps, adversarial training and
                its GPU scale-up; a planted shortcut, per-group fairness metrics, reweighing.
``explore``     the attribution explorer (model, image, method, class, eps) and the lesson's plots.
``checks``      the exercises' graders.

Nothing here is imported on ``import dlcourse.xai``: import the module you need.
"""
