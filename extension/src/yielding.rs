//! Lets the page's event loop run between forward passes. The reference device completes every
//! read synchronously, so without this a whole generation would run in one task: no Stop request
//! and no streamed token would be handled until it finished.

use engine::device::{BufferId, BufferKind, Device, DeviceInfo, ReadFuture, ReadTicket};
use engine::kernels::Op;
use wasm_bindgen::{JsCast, JsValue};
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
    /// The inner device reads synchronously: run and read now, yield when the ticket is redeemed
    /// (the pipelined decode redeems one ticket per token).
    fn run_then_read(&mut self, pass: &[Op], buf: BufferId, offset_bytes: u64, len: u64) -> engine::Result<ReadTicket> {
        self.inner.run_then_read(pass, buf, offset_bytes, len)
    }
    fn redeem(&mut self, ticket: ReadTicket) -> ReadFuture<'_> {
        Box::pin(async move {
            yield_to_event_loop().await;
            self.inner.redeem(ticket).await
        })
    }
}

/// Waits for one task of background priority, so that everything else queued first (the
/// runtime messages carrying Stop requests above all) runs before the next forward pass.
/// MessageChannel yields starve those messages for seconds (measured: a Stop took ~6 s), and
/// timers are throttled in hidden documents such as the offscreen one.
pub async fn yield_to_event_loop() {
    match background_task() {
        Some(task) => {
            let _ = JsFuture::from(task).await;
        }
        None => message_channel_yield().await,
    }
}

/// `scheduler.postTask(() => {}, { priority: "background" })`, where the Scheduler API exists.
fn background_task() -> Option<js_sys::Promise> {
    let scheduler = js_sys::Reflect::get(&js_sys::global(), &"scheduler".into()).ok()?;
    let post_task: js_sys::Function = js_sys::Reflect::get(&scheduler, &"postTask".into()).ok()?.dyn_into().ok()?;
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"priority".into(), &"background".into()).ok()?;
    // A Rust closure, not `new Function`: the extension CSP forbids eval.
    let noop = wasm_bindgen::closure::Closure::once_into_js(|| ());
    post_task.call2(&scheduler, &noop, &options).ok()?.dyn_into().ok()
}

async fn message_channel_yield() {
    let Ok(channel) = web_sys::MessageChannel::new() else { return };
    let receiver = channel.port1();
    let arrived = js_sys::Promise::new(&mut |resolve, _reject| receiver.set_onmessage(Some(&resolve)));
    if channel.port2().post_message(&JsValue::NULL).is_ok() {
        let _ = JsFuture::from(arrived).await;
    }
    receiver.set_onmessage(None);
}
