"""Every invalid input to the Fisher functions raises with a message naming the value and the fix."""

import jax
import numpy as np
import pytest

from brgnnft.brg import GramBasis, fisher_information, flatten_params, kl_divergence, posterior_fisher
from brgnnft.brg.likelihoods import output_fisher, output_fisher_factor, output_kl_divergence
from brgnnft.inference import prior_samples
from brgnnft.models import MLP

MODEL = MLP(hidden=(3,), activation="tanh", noise=0.3)
PARAMS = MODEL.sample_params(jax.random.key(0), input_dim=2)
X = np.random.default_rng(0).normal(size=(4, 2))


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"basis": "eigenbasis"}, ValueError, r"invalid basis='eigenbasis': expected one of 'eigen', 'diagonal'"),
        ({"method": "svd"}, ValueError, r"invalid method='svd'"),
        ({"basis": "diagonal", "method": "gram"}, ValueError, r"basis='diagonal' is computed by method='diagonal'"),
        ({"method": "diagonal"}, ValueError, r"method='diagonal' computes only the diagonal of I: pass basis='diagonal'"),
        ({"num_eigenvalues": 0}, ValueError, r"num_eigenvalues must be a positive integer \(>= 1\), got 0"),
        ({"num_eigenvalues": 2.5}, TypeError, r"num_eigenvalues must be a positive integer, got 2.5"),
        ({"rtol": 1.0}, ValueError, r"rtol is relative to the largest eigenvalue and must be < 1, got 1.0"),
        ({"rtol": -1e-9}, ValueError, r"rtol must be a finite number > 0"),
        ({"max_memory_bytes": 0}, ValueError, r"max_memory_bytes must be a finite number > 0, got 0"),
        ({"chunk_size": 0}, ValueError, r"chunk_size must be a positive integer"),
        ({"key": 3}, TypeError, r"key must be a JAX PRNG key, got the integer 3"),
        ({"noise": -0.1}, ValueError, r"noise must be a finite number > 0, got -0.1"),
    ],
)
def test_invalid_options(options, error, message):
    with pytest.raises(error, match=message):
        fisher_information(MODEL, PARAMS, X, **options)


def test_memory_ceilings_name_the_alternative():
    with pytest.raises(MemoryError, match=r"method='dense' needs about .* GB for P=13 parameters.*method='gram'"):
        fisher_information(MODEL, PARAMS, X, method="dense", max_memory_bytes=100)
    with pytest.raises(MemoryError, match=r"method='gram' needs about .* for the 4 x 4 Gram.*method='lanczos'"):
        fisher_information(MODEL, PARAMS, X, method="gram", max_memory_bytes=100)
    with pytest.raises(MemoryError, match=r"the whole spectrum needs .* pass num_eigenvalues=k"):
        fisher_information(MODEL, PARAMS, X, max_memory_bytes=100)
    info = fisher_information(MODEL, PARAMS, X, method="gram")
    with pytest.raises(MemoryError, match=r"forming the eigenvectors V would take about"):
        GramBasis(info.jacobian, info.eigenvectors.gram_vectors, info.eigenvalues, max_memory_bytes=8).matrix()
    with pytest.raises(MemoryError, match=r"method='dense' needs about"):
        info.to_dense(max_memory_bytes=100)


def test_lanczos_needs_a_valid_count():
    with pytest.raises(ValueError, match=r"method='lanczos' computes the top of the spectrum only: pass num_eigenvalues=k"):
        fisher_information(MODEL, PARAMS, X, method="lanczos")
    with pytest.raises(ValueError, match=r"num_eigenvalues < P = 13, got 13"):
        fisher_information(MODEL, PARAMS, X, method="lanczos", num_eigenvalues=13)


def test_invalid_params():
    with pytest.raises(TypeError, match=r"params must be a dict of site name to array, got list"):
        fisher_information(MODEL, [PARAMS["w1"]], X)
    missing = {name: value for name, value in PARAMS.items() if name != "b2"}
    with pytest.raises(ValueError, match=r"params is missing the sites \['b2'\]"):
        fisher_information(MODEL, missing, X)
    with pytest.raises(ValueError, match=r"site 'w1' has shape \(3, 3\), expected \(\.\.\., 2, 3\)"):
        fisher_information(MODEL, {**PARAMS, "w1": np.zeros((3, 3))}, X)
    batched = MODEL.sample_params(jax.random.key(1), input_dim=2, num_samples=2)
    with pytest.raises(ValueError, match=r"params carries sample axes \(2,\).*use posterior_fisher"):
        fisher_information(MODEL, batched, X)
    with pytest.raises(ValueError, match=r"params contains NaN or inf"):
        fisher_information(MODEL, {**PARAMS, "b1": np.array([0.0, np.nan, 0.0])}, X)
    uneven = {**batched, "b1": np.zeros((3, 3))}
    with pytest.raises(ValueError, match=r"site 'b2' has sample shape \(2,\) but 'b1' has \(3,\): every site needs the same leading sample axes"):
        flatten_params(uneven, shapes=MODEL.param_shapes(2))


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"x must be 2-D with shape \(n, d\), got shape \(4,\)"):
        fisher_information(MODEL, PARAMS, X[:, 0])
    with pytest.raises(ValueError, match=r"x contains NaN or inf, first in row 1"):
        fisher_information(MODEL, PARAMS, np.array([[0.0, 1.0], [np.inf, 0.0]]))
    with pytest.raises(TypeError, match=r"model must provide apply\(params, x\), got dict"):
        fisher_information({}, PARAMS, X)


def test_noise_resolution_errors():
    noiseless = MLP(hidden=(3,), activation="tanh", noise=None)
    with pytest.raises(ValueError, match=r"noise prior \(noise=None\) and params has no 'noise' site: pass noise=<sigma>"):
        fisher_information(noiseless, PARAMS, X)
    classifier = MLP(hidden=(3,), activation="tanh", likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"noise=0.5 applies only to likelihood='gaussian', but the model's is 'bernoulli'"):
        fisher_information(classifier, PARAMS, X, noise=0.5)


def test_basis_argument_errors():
    basis = fisher_information(MODEL, PARAMS, X, method="gram").eigenvectors
    with pytest.raises(ValueError, match=r"flat parameters have shape \(5,\), expected \(\.\.\., 13\)"):
        basis.coordinates(np.zeros(5))
    with pytest.raises(ValueError, match=r"coefficients have shape \(2, 7\), expected \(\.\.\., 4\)"):
        basis.combine(np.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"boolean mask has shape \(2,\), expected \(4,\)"):
        basis.select(np.array([True, False]))
    with pytest.raises(TypeError, match=r"select needs indices, a slice or a boolean mask, got an array of dtype float64"):
        basis.select(np.array([0.5]))


def test_layout_errors():
    _, layout = flatten_params({"w": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"flat parameters have shape \(3,\), expected \(\.\.\., 4\)"):
        layout.unflatten(np.zeros(3))
    with pytest.raises(ValueError, match=r"shapes is empty"):
        flatten_params({})
    with pytest.raises(TypeError, match=r"params must be a dict of site name to array, got ndarray"):
        flatten_params(np.zeros(3))


def test_posterior_fisher_errors():
    tree = prior_samples(MODEL, X, key=jax.random.key(2), num_samples=3)
    with pytest.raises(ValueError, match=r"the DataTree has no 'posterior' group; it has"):
        posterior_fisher(MODEL, tree)
    with pytest.raises(ValueError, match=r"num_samples=5 exceeds the 3 samples available"):
        posterior_fisher(MODEL, tree, group="prior", num_samples=5)
    with pytest.raises(ValueError, match=r"x is missing and the data has no constant_data group"):
        posterior_fisher(MODEL, {"w1": np.zeros((2, 2, 3))})
    with pytest.raises(ValueError, match=r"params has no sample axis"):
        posterior_fisher(MODEL, PARAMS, X)


def test_kl_divergence_errors():
    with pytest.raises(TypeError, match=r"delta must be a dict of site name to array, got ndarray"):
        kl_divergence(MODEL, PARAMS, np.zeros(13), X)
    with pytest.raises(ValueError, match=r"params is missing the sites \['w2'\]"):
        kl_divergence(MODEL, PARAMS, {name: value for name, value in PARAMS.items() if name != "w2"}, X)


def test_likelihood_errors():
    with pytest.raises(ValueError, match=r"invalid likelihood='student'"):
        output_fisher("student", np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"likelihood='categorical' needs K >= 2 logits per datum"):
        output_fisher_factor("categorical", np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"likelihood='bernoulli' needs K = 1 output per datum"):
        output_fisher("bernoulli", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"likelihood='gaussian' needs the noise standard deviation: pass noise=<sigma>"):
        output_fisher("gaussian", np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"noise has shape \(3,\), expected a scalar or the sample shape \(2,\)"):
        output_fisher("gaussian", np.zeros((2, 4, 1)), noise=np.ones(3))
    with pytest.raises(ValueError, match=r"outputs must have shape \(\.\.\., n, K\), got shape \(3,\)"):
        output_fisher("poisson", np.zeros(3))
    with pytest.raises(ValueError, match=r"f_from has shape \(2, 1\) and f_to \(3, 2, 1\): give both the same rank"):
        output_kl_divergence("poisson", np.zeros((2, 1)), np.zeros((3, 2, 1)))
