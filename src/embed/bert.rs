//! The forward pass of all-MiniLM-L6-v2 (a BERT encoder: embeddings, then six layers of
//! self-attention and feed-forward, each followed by a residual layer norm), written for
//! speed on the CPU: queries are scaled before the scores are computed (the smaller tensor),
//! and the attention weights come from candle's fused softmax over the last dimension, one
//! pass where the generic softmax makes five (max, subtract, exp, sum, divide), each
//! allocating a tensor of rows x heads x length² floats. Those passes were a third of a
//! 256-token text's time.
//!
//! It reads the same safetensors names as candle-transformers' `BertModel`, and its output
//! equals it within float rounding (the golden vectors hold it to 1e-5 per component:
//! tests/local_model.rs). It owns the arithmetic only: tokenizing, pooling and loading the
//! files are [`super::local`]'s.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use candle_transformers::models::bert::Config;

/// One encoder layer.
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// The encoder, loaded once and shared read-only by every forward pass.
pub struct MiniLm {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
}

fn norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    layer_norm(
        size,
        LayerNormConfig {
            eps,
            ..Default::default()
        },
        vb,
    )
}

impl MiniLm {
    /// Load the weights under `embeddings.*` and `encoder.*` (or under `bert.`, as some
    /// exports name them).
    pub fn load(vb: VarBuilder, config: &Config) -> Result<MiniLm> {
        match Self::load_at(vb.clone(), config) {
            Ok(model) => Ok(model),
            Err(first) => Self::load_at(vb.pp("bert"), config).map_err(|_| first),
        }
    }

    fn load_at(vb: VarBuilder, config: &Config) -> Result<MiniLm> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let e = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                Ok(Layer {
                    query: linear(h, h, l.pp("attention.self.query"))?,
                    key: linear(h, h, l.pp("attention.self.key"))?,
                    value: linear(h, h, l.pp("attention.self.value"))?,
                    attention_out: linear(h, h, l.pp("attention.output.dense"))?,
                    attention_norm: norm(h, eps, l.pp("attention.output.LayerNorm"))?,
                    up: linear(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                    down: linear(config.intermediate_size, h, l.pp("output.dense"))?,
                    out_norm: norm(h, eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MiniLm {
            words: embedding(config.vocab_size, h, e.pp("word_embeddings"))?,
            positions: embedding(config.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_types: embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            embeddings_norm: norm(h, eps, e.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            head_size: h / config.num_attention_heads,
        })
    }

    /// Last hidden states, (rows, width, hidden), of padded `ids` whose `mask` is 1 on real
    /// tokens and 0 on padding (which no token attends to).
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (rows, width) = ids.dims2()?;
        let positions = Tensor::arange(0u32, width as u32, ids.device())?;
        let mut x = (self.words.forward(ids)? + self.token_types.forward(types)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        x = self.embeddings_norm.forward(&x)?;
        // 0 where attending is allowed, the lowest float where it is not: (rows, 1, 1, width).
        let blocked = ((mask.ones_like()? - mask)?.to_dtype(DType::F32)? * f64::from(f32::MIN))?
            .reshape((rows, 1, 1, width))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &blocked, rows, width)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, blocked: &Tensor, rows: usize, width: usize) -> Result<Tensor> {
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((rows, width, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let q = heads((l.query.forward(x)? * scale)?)?;
        let k = heads(l.key.forward(x)?)?;
        let v = heads(l.value.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(blocked)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
            rows,
            width,
            self.heads * self.head_size,
        ))?;
        let x = l
            .attention_norm
            .forward(&(l.attention_out.forward(&context)? + x)?)?;
        let inner = l.up.forward(&x)?.gelu_erf()?;
        l.out_norm.forward(&(l.down.forward(&inner)? + &x)?)
    }
}
