//! Lets the page's event loop run between forward passes. The reference device completes every
//! read synchronously, so without this a whole generation would run in one task: no Stop request
//! and no streamed token would be handled until it finished.

use engine::device::{BufferId, BufferKind, Device, DeviceInfo, ReadFuture};
use engine::kernels::Op;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

pub struct YieldingDevice<D> {
    inner: D,
}

impl<D: Device> YieldingDevice<D> {
    pub fn new(inner: D) -> Self {
        Self { inner }
    }
}

impl<D: Device> Device for YieldingDevice<D> {
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn alloc(&mut self, kind: BufferKind, label: &str, bytes: u64) -> engine::Result<BufferId> {
        self.inner.alloc(kind, label, bytes)
    }
    fn free(&mut self, buf: BufferId) {
        self.inner.free(buf)
    }
    fn write(&mut self, buf: BufferId, offset_bytes: u64, data: &[u8]) -> engine::Result<()> {
        self.inner.write(buf, offset_bytes, data)
    }
    fn run(&mut self, pass: &[Op]) -> engine::Result<()> {
        self.inner.run(pass)
    }
    fn read(&mut self, buf: BufferId, offset_bytes: u64, len: u64) -> ReadFuture<'_> {
        Box::pin(async move {
            yield_to_event_loop().await;
            self.inner.read(buf, offset_bytes, len).await
        })
    }
    fn allocated_bytes(&self) -> u64 {
        self.inner.allocated_bytes()
    }
}

/// Waits for one macrotask. A MessageChannel, because timers in hidden documents (the offscreen
/// document is one) are throttled to about one per second.
pub async fn yield_to_event_loop() {
    let Ok(channel) = web_sys::MessageChannel::new() else { return };
    let receiver = channel.port1();
    let arrived = js_sys::Promise::new(&mut |resolve, _reject| receiver.set_onmessage(Some(&resolve)));
    if channel.port2().post_message(&JsValue::NULL).is_ok() {
        let _ = JsFuture::from(arrived).await;
    }
    receiver.set_onmessage(None);
}
