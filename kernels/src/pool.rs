//! A pool of storage buffers, so that a forward pass reuses memory instead of creating buffers
//! (creating and first binding a buffer costs far more than a dispatch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::dtype::DType;
use crate::error::{KernelError, Result};

/// Usage of every pooled storage buffer.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Buffers are bucketed by capacity: powers of two up to 4 KiB, then sixteen steps per octave,
/// so a reused buffer wastes at most 12.5%.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    if bytes <= 4096 {
        return bytes.next_power_of_two();
    }
    let step = (bytes.next_power_of_two() / 16).max(1);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct State {
    /// Buffers free for any use.
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Buffers released since the last submit. Commands recorded but not yet submitted may
    /// still read them, so they may be written by later recorded dispatches (which run after
    /// those commands) but not by `Queue::write_buffer`, which runs before the whole submit.
    released_since_submit: HashMap<u64, Vec<wgpu::Buffer>>,
    pooled_bytes: u64,
    live_bytes: u64,
    peak_live_bytes: u64,
}

/// Shared state behind [`crate::Gpu`]'s buffer pool.
#[derive(Default)]
pub(crate) struct Pool {
    state: Mutex<State>,
}

/// Memory figures of the buffer pool, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live buffers (capacity, not requested size) and staging textures.
    pub live_bytes: u64,
    /// The most live bytes seen since the last [`crate::Gpu::reset_peak`].
    pub peak_live_bytes: u64,
    /// Bytes held in the pool, free for reuse.
    pub pooled_bytes: u64,
}

impl Pool {
    pub(crate) fn take(&self, capacity: u64, for_queue_write: bool) -> Option<wgpu::Buffer> {
        let mut s = self.state.lock().unwrap();
        let found = match s.free.get_mut(&capacity).and_then(Vec::pop) {
            Some(b) => Some(b),
            None if !for_queue_write => s
                .released_since_submit
                .get_mut(&capacity)
                .and_then(Vec::pop),
            None => None,
        };
        if found.is_some() {
            s.pooled_bytes -= capacity;
        }
        s.live_bytes += capacity;
        s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        found
    }

    /// Counts `bytes` of other device memory (staging textures) as live, or as freed.
    pub(crate) fn account(&self, bytes: u64, live: bool) {
        let mut s = self.state.lock().unwrap();
        if live {
            s.live_bytes += bytes;
            s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        } else {
            s.live_bytes -= bytes;
        }
    }

    pub(crate) fn give_back(&self, buffer: wgpu::Buffer) {
        let capacity = buffer.size();
        let mut s = self.state.lock().unwrap();
        s.live_bytes -= capacity;
        s.pooled_bytes += capacity;
        s.released_since_submit
            .entry(capacity)
            .or_default()
            .push(buffer);
    }

    /// Called after every submit: what was released before it is now free for any use.
    pub(crate) fn submitted(&self) {
        let mut s = self.state.lock().unwrap();
        let released = std::mem::take(&mut s.released_since_submit);
        for (capacity, mut buffers) in released {
            s.free.entry(capacity).or_default().append(&mut buffers);
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let s = self.state.lock().unwrap();
        PoolStats {
            live_bytes: s.live_bytes,
            peak_live_bytes: s.peak_live_bytes,
            pooled_bytes: s.pooled_bytes,
        }
    }

    pub(crate) fn reset_peak(&self) {
        let mut s = self.state.lock().unwrap();
        s.peak_live_bytes = s.live_bytes;
    }

    /// Drops every free buffer (those released since the last submit stay until it).
    pub(crate) fn trim(&self) {
        let mut s = self.state.lock().unwrap();
        let freed: u64 = s.free.values().flatten().map(wgpu::Buffer::size).sum();
        s.free.clear();
        s.pooled_bytes -= freed;
    }
}

/// A device storage buffer that goes back to its pool when dropped.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    len_bytes: u64,
    pool: Arc<Pool>,
}

impl GpuBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, len_bytes: u64, pool: Arc<Pool>) -> Self {
        GpuBuffer {
            buffer: Some(buffer),
            len_bytes,
            pool,
        }
    }

    /// The wgpu buffer (its capacity may exceed [`GpuBuffer::len_bytes`]).
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Bytes requested for this buffer.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Fails with a shape error of `op` unless this buffer holds `elems` elements of `dtype`.
    pub fn check_holds(
        &self,
        op: &'static str,
        what: &str,
        elems: usize,
        dtype: DType,
    ) -> Result<()> {
        let need = (elems * dtype.size()) as u64;
        if self.len_bytes < need {
            return Err(KernelError::Shape {
                op,
                detail: format!(
                    "{what} holds {} bytes but {elems} {dtype} elements need {need}",
                    self.len_bytes
                ),
            });
        }
        Ok(())
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give_back(b);
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.len_bytes)
    }
}

/// Idle staging textures by size. Textures are only written by recorded commands (never by
/// `Queue::write_texture`), so a released one can be reused at once: later commands in the same
/// encoder run after the ones that read it.
pub(crate) type TexturePool =
    Mutex<HashMap<(u32, u32, u32, wgpu::TextureFormat), Vec<wgpu::Texture>>>;

fn texture_bytes(t: &wgpu::Texture) -> u64 {
    let texel = t.format().block_copy_size(None).unwrap_or(16) as u64;
    t.width() as u64 * t.height() as u64 * t.depth_or_array_layers() as u64 * texel
}

/// A staging texture that goes back to its pool when dropped.
pub struct PooledTexture {
    texture: Option<wgpu::Texture>,
    view: wgpu::TextureView,
    array_view: wgpu::TextureView,
    pool: Arc<TexturePool>,
    memory: Arc<Pool>,
}

impl PooledTexture {
    pub(crate) fn new(texture: wgpu::Texture, pool: Arc<TexturePool>, memory: Arc<Pool>) -> Self {
        memory.account(texture_bytes(&texture), true);
        let dimension = |d| wgpu::TextureViewDescriptor {
            dimension: Some(d),
            ..wgpu::TextureViewDescriptor::default()
        };
        let view = texture.create_view(&dimension(if texture.depth_or_array_layers() == 1 {
            wgpu::TextureViewDimension::D2
        } else {
            wgpu::TextureViewDimension::D2Array
        }));
        let array_view = texture.create_view(&dimension(wgpu::TextureViewDimension::D2Array));
        PooledTexture {
            texture: Some(texture),
            view,
            array_view,
            pool,
            memory,
        }
    }

    /// A 2-D view (of layer 0 only when the texture has several layers).
    pub fn view(&self) -> &wgpu::TextureView {
        &self.view
    }

    /// A 2-D array view of every layer.
    pub fn array_view(&self) -> &wgpu::TextureView {
        &self.array_view
    }

    /// The texture.
    pub fn raw(&self) -> &wgpu::Texture {
        self.texture.as_ref().expect("texture present until drop")
    }
}

impl Drop for PooledTexture {
    fn drop(&mut self) {
        if let Some(t) = self.texture.take() {
            self.memory.account(texture_bytes(&t), false);
            let key = (t.width(), t.height(), t.depth_or_array_layers(), t.format());
            self.pool.lock().unwrap().entry(key).or_default().push(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_and_waste_little() {
        for bytes in [
            1u64,
            255,
            256,
            257,
            4095,
            4096,
            4097,
            10_000,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes);
            assert!(c >= 256);
            if bytes > 4096 {
                assert!((c - bytes) * 8 <= bytes, "{bytes} -> {c}");
            }
        }
    }
}
