"""Token-level distillation of a tiny language model on a synthetic grammar, with padding.

Sequences of variable length come from a second-order grammar: the next token
is drawn from a distribution that depends on the two previous tokens. A
causal-convolution teacher learns next-token prediction; a much smaller
student is then trained from scratch and, separately, distilled with
`keras_kd.losses.TokenKLDivergence`. Padded positions carry label -100 (the
Distiller's `ignore_index`): they count in neither the cross-entropy nor the
KD term, and the means run over real tokens only.

Run:

    python examples/token_distillation.py --epochs 10
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_kd import losses as kd_losses  # noqa: E402
from keras_kd.backend import keras  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402

PAD = 0  # input id of padding; label -100


def make_grammar(vocab, seed):
    """Per (prev2, prev1) pair, a next-token distribution concentrated on two tokens (ids 1..vocab-1)."""
    rng = np.random.default_rng(seed)
    table = np.full((vocab, vocab, vocab), 0.02 / (vocab - 1))
    table[..., PAD] = 0.0
    for a in range(vocab):
        for b in range(vocab):
            first, second = rng.choice(np.arange(1, vocab), size=2, replace=False)
            table[a, b, first] += 0.68
            table[a, b, second] += 0.30
    return table / table.sum(-1, keepdims=True)


def sample_sequences(grammar, count, max_length, seed):
    """Inputs `(count, max_length)` with PAD after each sequence's end; labels = next token, -100 at padding."""
    rng = np.random.default_rng(seed)
    vocab = grammar.shape[0]
    tokens = np.zeros((count, max_length + 1), np.int32)
    labels = np.full((count, max_length), -100, np.int32)
    for i in range(count):
        length = rng.integers(max_length // 2, max_length + 1)
        sequence = list(rng.integers(1, vocab, size=2))
        while len(sequence) < length + 1:
            sequence.append(rng.choice(vocab, p=grammar[sequence[-2], sequence[-1]]))
        tokens[i, : length + 1] = sequence
        labels[i, :length] = sequence[1:]
    inputs = tokens[:, :-1]
    inputs[labels == -100] = PAD
    return inputs, labels


def build_lm(vocab, max_length, width, layers, name, seed=0):
    inputs = keras.Input((max_length,), dtype="int32")
    x = keras.layers.Embedding(vocab, width, embeddings_initializer=keras.initializers.RandomUniform(seed=seed))(inputs)
    for i in range(layers):
        x = keras.layers.Conv1D(width, 2, padding="causal", activation="relu",
                                kernel_initializer=keras.initializers.HeNormal(seed + i + 1))(x)
    outputs = keras.layers.Dense(vocab, kernel_initializer=keras.initializers.GlorotUniform(seed + 50))(x)
    return keras.Model(inputs, outputs, name=name)


def token_accuracy(model, x, y):
    """Next-token accuracy over real (non-padded) positions."""
    predictions = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1)
    real = y != -100
    return float(np.mean(predictions[real] == y[real]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--train-sequences", type=int, default=2000)
    parser.add_argument("--student-sequences", type=int, default=300,
                        help="labelled sequences the student sees (fewer than the teacher's: KD matters most here)")
    parser.add_argument("--max-length", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    grammar = make_grammar(args.vocab, args.seed)
    x_train, y_train = sample_sequences(grammar, args.train_sequences, args.max_length, args.seed + 1)
    x_test, y_test = sample_sequences(grammar, max(200, args.train_sequences // 4), args.max_length, args.seed + 2)
    x_student, y_student = x_train[: args.student_sequences], y_train[: args.student_sequences]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100)

    teacher = build_lm(args.vocab, args.max_length, 64, 2, "teacher_lm", args.seed)
    teacher.compile(keras.optimizers.Adam(5e-3), loss)
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=64, verbose=0)
    results = {"teacher": token_accuracy(teacher, x_test, y_test)}

    scratch = build_lm(args.vocab, args.max_length, 8, 1, "student_lm", args.seed + 7)
    scratch.compile(keras.optimizers.Adam(5e-3), loss)
    scratch.fit(x_student, y_student, epochs=args.epochs, batch_size=32, verbose=0)
    results["student scratch"] = token_accuracy(scratch, x_test, y_test)

    student = build_lm(args.vocab, args.max_length, 8, 1, "student_lm", args.seed + 7)
    distiller = Distiller(teacher, student, distillation_losses=kd_losses.TokenKLDivergence(args.temperature),
                          alpha=args.alpha)
    distiller.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = distiller.fit(x_student, y_student, epochs=args.epochs, batch_size=32, verbose=0)
    results["student token KD"] = token_accuracy(student, x_test, y_test)

    # The best any model can do: always predict the grammar's most likely next token.
    best = np.argmax(grammar, axis=-1)
    previous2 = np.concatenate([np.zeros_like(x_test[:, :1]), x_test[:, :-1]], axis=1)
    real = y_test != -100
    predictable = real.copy()
    predictable[:, 0] = False  # the second token of a sequence is random, not drawn from the grammar
    oracle = float(np.mean(best[previous2, x_test][predictable] == y_test[predictable]))

    print(f"Synthetic grammar (vocab {args.vocab}, length <= {args.max_length}, {int(real.mean() * 100)}% real "
          f"tokens), student trained on {len(x_student)} sequences for {args.epochs} epochs:")
    for label, value in results.items():
        print(f"  {label:18s} next-token accuracy {value:.4f}")
    print(f"  (grammar oracle    ~{oracle:.4f}; final distillation loss {history.history['distillation_loss'][-1]:.4f})")
    return results


if __name__ == "__main__":
    main()
