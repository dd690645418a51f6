//! The options page: the model catalog (pick one) and the settings the popup uses.

use std::rc::Rc;

use wasm_bindgen_futures::spawn_local;
use web_sys::{HtmlInputElement, HtmlTextAreaElement};
use yew::prelude::*;

use super::protocol::{Settings, CATALOG};
use super::settings;

#[derive(Clone, PartialEq, Default)]
struct OptionsState {
    /// `None` until the stored settings are read.
    settings: Option<Settings>,
    notice: Option<String>,
}

enum OptionsAction {
    Loaded(Settings),
    SelectModel(String),
    SetHub(String),
    SetSystemPrompt(String),
    SetMaxTokens(u32),
    Notice(String),
}

impl Reducible for OptionsState {
    type Action = OptionsAction;

    fn reduce(self: Rc<Self>, action: OptionsAction) -> Rc<Self> {
        let mut next = (*self).clone();
        if let OptionsAction::Loaded(settings) = action {
            next.settings = Some(settings);
            return Rc::new(next);
        }
        if let OptionsAction::Notice(text) = action {
            next.notice = Some(text);
            return Rc::new(next);
        }
        let Some(settings) = next.settings.as_mut() else { return self };
        match action {
            OptionsAction::SelectModel(id) => settings.model_id = id,
            OptionsAction::SetHub(url) => settings.hub_url = url,
            OptionsAction::SetSystemPrompt(text) => settings.system_prompt = text,
            OptionsAction::SetMaxTokens(n) => settings.chat.max_tokens = n.max(1),
            OptionsAction::Loaded(_) | OptionsAction::Notice(_) => {}
        }
        next.notice = None;
        Rc::new(next)
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

#[function_component(OptionsApp)]
pub fn options_app() -> Html {
    let state = use_reducer(OptionsState::default);
    {
        let dispatch = state.dispatcher();
        use_effect_with((), move |_| {
            spawn_local(async move {
                match settings::load().await {
                    Ok(s) => dispatch.dispatch(OptionsAction::Loaded(s)),
                    Err(e) => dispatch.dispatch(OptionsAction::Notice(format!("Cannot read settings: {e}"))),
                }
            });
        });
    }
    let Some(current) = state.settings.clone() else {
        return html! { <p>{ state.notice.clone().unwrap_or_else(|| "Loading…".into()) }</p> };
    };

    let on_save = {
        let state = state.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(settings) = state.settings.clone() else { return };
            let dispatch = state.dispatcher();
            spawn_local(async move {
                let notice = match settings::save(&settings).await {
                    Ok(()) => "Saved.".to_string(),
                    Err(e) => format!("Cannot save: {e}"),
                };
                dispatch.dispatch(OptionsAction::Notice(notice));
            });
        })
    };
    let on_hub = {
        let dispatch = state.dispatcher();
        Callback::from(move |e: InputEvent| dispatch.dispatch(OptionsAction::SetHub(e.target_unchecked_into::<HtmlInputElement>().value())))
    };
    let on_system = {
        let dispatch = state.dispatcher();
        Callback::from(move |e: InputEvent| {
            dispatch.dispatch(OptionsAction::SetSystemPrompt(e.target_unchecked_into::<HtmlTextAreaElement>().value()))
        })
    };
    let on_max_tokens = {
        let dispatch = state.dispatcher();
        Callback::from(move |e: InputEvent| {
            if let Ok(n) = e.target_unchecked_into::<HtmlInputElement>().value().parse() {
                dispatch.dispatch(OptionsAction::SetMaxTokens(n));
            }
        })
    };

    html! {
        <div>
            <h1>{ "QWGLM settings" }</h1>
            <h2>{ "Models" }</h2>
            <table class="models" id="models">
                <tr><th></th><th>{ "Model" }</th><th>{ "File" }</th><th>{ "Size" }</th></tr>
                { for CATALOG.iter().map(|entry| {
                    let dispatch = state.dispatcher();
                    let id = entry.id.to_string();
                    html! {
                        <tr>
                            <td><input type="radio" name="model" checked={current.model_id == entry.id}
                                onchange={Callback::from(move |_| dispatch.dispatch(OptionsAction::SelectModel(id.clone())))} /></td>
                            <td>{ entry.name }</td>
                            <td><code>{ format!("{}/{}", entry.repo, entry.file) }</code></td>
                            <td>{ megabytes(entry.size_bytes) }</td>
                        </tr>
                    }
                }) }
            </table>
            <label>{ "Download host (Hugging Face Hub or a mirror with the same layout)" }
                <input id="hub-url" type="url" value={current.hub_url.clone()} oninput={on_hub} />
            </label>
            <h2>{ "Chat" }</h2>
            <label>{ "System prompt" }
                <textarea id="system-prompt" value={current.system_prompt.clone()} oninput={on_system} />
            </label>
            <label>{ "Most tokens per answer" }
                <input id="max-tokens" type="number" min="1" value={current.chat.max_tokens.to_string()} oninput={on_max_tokens} />
            </label>
            <button id="save" onclick={on_save}>{ "Save" }</button>
            <span id="notice">{ state.notice.clone().unwrap_or_default() }</span>
        </div>
    }
}
