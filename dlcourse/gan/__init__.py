"""Chapter 08 · Generative models: autoencoders, GANs, IS and FID.

``numpy_impl``  the pieces by hand in NumPy: the VAE's KL term and reparameterisation (with
                their gradients), GAN losses from logits (discriminator, non-saturating and
                minimax generator), the ring of 8 Gaussians and its mode-coverage count, FID and
                the Inception Score on given features / class probabilities, and the ring GAN
                trained by hand: LeakyReLU MLPs in PyTorch's weight layout, forward and
                backward, the R1 penalty with its hand-derived double-backward, Adam on dicts.
``torch_impl``  the PyTorch twins, device-agnostic: the ring GAN's MLPs, R1 with autograd,
                one GAN training step with ``detach``, and the digits models.

Nothing here is imported on ``import dlcourse.gan``: import the module you need.
"""
