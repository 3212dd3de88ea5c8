//! The derive macros of VarveDB, re-exported by `varvedb`: `#[derive(varvedb::Event)]` and
//! `#[derive(varvedb::Layout)]`. See `varvedb::Event` and `varvedb::Layout` for what they
//! mean; this crate only writes the impls.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, ToTokens};
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Fields, Generics, LitStr, Meta};

/// Longest event type name the store accepts (`varvedb::MAX_EVENT_TYPE_LEN`).
const MAX_NAME_LEN: usize = 256;

/// Derives `varvedb::Event` (and `varvedb::Layout`) for a type that also derives rkyv's
/// `Archive`: `#[event(name = "...", version = N)]` sets the stored name (default: the type's
/// name) and the schema version (default: 1); `#[event(previous = Type)]` names the type of the
/// previous version, which the type implements `varvedb::Upcast` from (or `varvedb::Split`, with
/// `#[event(previous = Type, split)]`), so that readers of it read the events of that version and
/// every one before it.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match event(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Derives `varvedb::Layout` for a type that events contain: the fingerprint of its archived
/// layout, from its fields' names, order and types.
#[proc_macro_derive(Layout)]
pub fn derive_layout(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match layout(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Derives `varvedb::Readable` for an enum whose variants each hold one event type: a set of
/// event types read together, in log order, by one reader, subscription, processor or
/// projector. It also writes three enums beside it, named after it: `<Name>View<'t>` (what reads
/// yield), `<Name>Ref<'a>` (what handlers and projections get) and `<Name>Recorded` (what
/// subscriptions yield), each with one variant per member.
#[proc_macro_derive(EventSet)]
pub fn derive_event_set(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match event_set(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Most members of a set (one bit each in the reader's memo).
const MAX_MEMBERS: usize = 64;

fn event_set(input: &DeriveInput) -> syn::Result<Tokens> {
    let ident = &input.ident;
    let vis = &input.vis;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            ident,
            "EventSet is derived for an enum whose variants each hold one event type",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "a set of event types is not generic",
        ));
    }
    if data.variants.is_empty() || data.variants.len() > MAX_MEMBERS {
        return Err(syn::Error::new_spanned(
            ident,
            format!("a set of event types has 1 to {MAX_MEMBERS} members"),
        ));
    }
    let mut variants = Vec::new();
    let mut types = Vec::new();
    for variant in &data.variants {
        match &variant.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                variants.push(&variant.ident);
                types.push(&f.unnamed[0].ty);
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    variant,
                    "each variant of a set holds one event type: `Variant(EventType)`",
                ))
            }
        }
    }
    let view = quote::format_ident!("{}View", ident);
    let reference = quote::format_ident!("{}Ref", ident);
    let recorded = quote::format_ident!("{}Recorded", ident);
    let index: Vec<syn::Index> = (0..types.len()).map(syn::Index::from).collect();
    let bits: Vec<u32> = (0..types.len() as u32).collect();
    let mut distinct = Vec::new();
    for i in 0..types.len() {
        for j in i + 1..types.len() {
            let (a, b) = (types[i], types[j]);
            let message = format!(
                "two members of {ident} ({} and {}) have the same event name",
                variants[i], variants[j]
            );
            distinct.push(quote! {
                ::std::assert!(
                    !::varvedb::__private::same_name(
                        <#a as ::varvedb::Event>::NAME,
                        <#b as ::varvedb::Event>::NAME,
                    ),
                    #message
                );
            });
        }
    }
    let view_doc = format!(
        "One event of [`{ident}`] as reads yield it: the view of its member, borrowed from the \
         read transaction."
    );
    let ref_doc = format!("One event of [`{ident}`] as handlers and projections get it.");
    let recorded_doc =
        format!("One event of [`{ident}`] as subscriptions yield it: its member's owned copy.");
    Ok(quote! {
        #[doc = #view_doc]
        #vis enum #view<'t> {
            #(
                #[allow(missing_docs)]
                #variants(::varvedb::EventView<'t, #types>),
            )*
        }

        #[doc = #ref_doc]
        #[derive(Clone, Copy)]
        #vis enum #reference<'a> {
            #(
                #[allow(missing_docs)]
                #variants(&'a <#types as ::varvedb::__private::Archive>::Archived),
            )*
        }

        #[doc = #recorded_doc]
        #vis enum #recorded {
            #(
                #[allow(missing_docs)]
                #variants(::varvedb::RecordedEvent<#types>),
            )*
        }

        #[allow(dead_code)]
        impl<'t> #view<'t> {
            /// The event's envelope.
            #vis fn envelope(&self) -> ::varvedb::Envelope<'_> {
                match self { #( Self::#variants(e) => e.envelope(), )* }
            }
            /// Global sequence of the event.
            #vis fn seq(&self) -> u64 {
                match self { #( Self::#variants(e) => e.seq(), )* }
            }
            /// The stream of the event.
            #vis fn stream(&self) -> ::varvedb::StreamId {
                match self { #( Self::#variants(e) => e.stream(), )* }
            }
            /// Version of the event in its stream.
            #vis fn version(&self) -> u64 {
                match self { #( Self::#variants(e) => e.version(), )* }
            }
            /// Whether the event was stored at an older version of its member and upcast.
            #vis fn is_upcast(&self) -> bool {
                match self { #( Self::#variants(e) => e.is_upcast(), )* }
            }
            /// Which of the events an upcast split the stored event into this one is.
            #vis fn part(&self) -> ::varvedb::Part {
                match self { #( Self::#variants(e) => e.part(), )* }
            }
            /// The archived event, as a reference to its member's archived type.
            #vis fn event(&self) -> #reference<'_> {
                match self { #( Self::#variants(e) => #reference::#variants(e.archived()), )* }
            }
            /// Deserializes the event into an owned value of the set.
            ///
            /// # Errors
            ///
            /// `Error::InvalidPayload` if rkyv's deserializer fails.
            #vis fn deserialize(&self) -> ::varvedb::Result<#ident> {
                match self { #( Self::#variants(e) => e.deserialize().map(#ident::#variants), )* }
            }
        }

        #[allow(dead_code)]
        impl #recorded {
            /// The event's envelope.
            #vis fn envelope(&self) -> &::varvedb::OwnedEnvelope {
                match self { #( Self::#variants(e) => e.envelope(), )* }
            }
            /// Global sequence of the event.
            #vis fn seq(&self) -> u64 {
                match self { #( Self::#variants(e) => e.seq(), )* }
            }
            /// The archived event, as a reference to its member's archived type.
            #vis fn event(&self) -> #reference<'_> {
                match self { #( Self::#variants(e) => #reference::#variants(&**e), )* }
            }
            /// Deserializes the event into an owned value of the set.
            ///
            /// # Errors
            ///
            /// `Error::InvalidPayload` if rkyv's deserializer fails.
            #vis fn deserialize(&self) -> ::varvedb::Result<#ident> {
                match self { #( Self::#variants(e) => e.deserialize().map(#ident::#variants), )* }
            }
        }

        const _: () = { #( #distinct )* };

        impl ::varvedb::Readable for #ident {
            type View<'t> = #view<'t>;
            type Ref<'a> = #reference<'a>;
            type Recorded = #recorded;
            type Kinds = ( #( ::varvedb::__private::Member<#types>, )* );

            fn kinds() -> Self::Kinds {
                ( #( ::varvedb::__private::Member::new(#bits), )* )
            }

            fn accepted(kinds: &Self::Kinds) -> ::std::vec::Vec<::std::string::String> {
                let mut names = ::std::vec::Vec::new();
                #( kinds.#index.names_into(&mut names); )*
                names
            }

            fn follow(kinds: &Self::Kinds) -> ::std::vec::Vec<(::std::string::String, u16)> {
                let mut follow = ::std::vec::Vec::new();
                #( kinds.#index.follow_into(&mut follow); )*
                follow
            }

            fn aliases(kinds: &Self::Kinds, name: &str) -> ::std::vec::Vec<::std::string::String> {
                #(
                    let aliases = kinds.#index.aliases(name);
                    if !aliases.is_empty() {
                        return aliases;
                    }
                )*
                ::std::vec::Vec::new()
            }

            #[inline]
            fn view_of<'t>(
                storage: &::varvedb::Storage,
                kinds: &Self::Kinds,
                txn: &::varvedb::heed::RoTxn<'_>,
                record: ::varvedb::__private::Record<'t>,
                memo: &mut ::varvedb::__private::ViewMemo,
            ) -> ::varvedb::Result<#view<'t>> {
                #(
                    if kinds.#index.reads(&record) {
                        return kinds.#index.view_of(storage, txn, record, memo).map(#view::#variants);
                    }
                )*
                ::std::result::Result::Err(record.not_read())
            }

            fn envelope<'a>(view: &'a #view<'_>) -> ::varvedb::Envelope<'a> {
                view.envelope()
            }

            fn place(view: &#view<'_>) -> (u64, ::varvedb::StreamId, u64) {
                (view.seq(), view.stream(), view.version())
            }

            fn event<'a>(view: &'a #view<'_>) -> #reference<'a> {
                view.event()
            }

            fn record(view: &#view<'_>) -> #recorded {
                match view {
                    #( #view::#variants(e) => #recorded::#variants(<#types as ::varvedb::Readable>::record(e)), )*
                }
            }

            fn split_view<'t>(
                kinds: &Self::Kinds,
                record: ::varvedb::__private::Record<'t>,
                parts: &mut ::varvedb::__private::SplitParts,
                index: usize,
            ) -> ::varvedb::Result<Self::View<'t>> {
                #(
                    if kinds.#index.reads(&record) {
                        return kinds.#index
                            .split_view(record, parts, index)
                            .map(#view::#variants);
                    }
                )*
                ::std::result::Result::Err(record.not_read())
            }
        }
    })
}

fn event(input: &DeriveInput) -> syn::Result<Tokens> {
    let EventAttrs {
        name,
        version,
        previous,
        split,
    } = event_attrs(input)?;
    let ident = &input.ident;
    let name = match name {
        Some(name) => name,
        None if input.generics.type_params().next().is_some() => {
            return Err(syn::Error::new_spanned(
                ident,
                "a generic event type needs a name of its own for each use: set it with \
                 #[event(name = \"...\")] on a non-generic wrapper",
            ));
        }
        None => LitStr::new(&ident.to_string(), ident.span()),
    };
    let value = name.value();
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(syn::Error::new_spanned(
            &name,
            format!("an event name has 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    let layout = layout(input)?;
    let chain = if split {
        quote!(split_chain)
    } else {
        quote!(chain)
    };
    if split && previous.is_none() {
        return Err(syn::Error::new_spanned(
            ident,
            "`split` needs the previous version: #[event(previous = Type, split)]",
        ));
    }
    let upcasts = previous.as_ref().map(|previous| {
        quote! {
            fn upcasts() -> ::std::vec::Vec<::varvedb::Upcaster<Self>> {
                ::varvedb::Upcaster::<Self>::#chain::<#previous>()
            }
        }
    });
    // Versions rise along a chain: readers rely on a version after theirs never being one of
    // their own names' older versions.
    let rising = match &previous {
        Some(previous) if input.generics.params.is_empty() => {
            let message = format!(
                "the previous version of {ident} must have a lower schema version than {}",
                version
            );
            quote! {
                const _: () = ::std::assert!(
                    <#previous as ::varvedb::Event>::VERSION < #version,
                    #message
                );
            }
        }
        _ => Tokens::new(),
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #layout
        impl #impl_generics ::varvedb::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u16 = #version;
            #upcasts
        }
        #rising
    })
}

/// What the `#[event(...)]` attributes say.
struct EventAttrs {
    name: Option<LitStr>,
    version: u16,
    previous: Option<syn::Type>,
    /// The step from the previous version splits (`varvedb::Split`) instead of converting.
    split: bool,
}

fn event_attrs(input: &DeriveInput) -> syn::Result<EventAttrs> {
    let mut name = None;
    let mut version = 1u16;
    let mut previous = None;
    let mut split = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else if meta.path.is_ident("version") {
                let lit: syn::LitInt = meta.value()?.parse()?;
                version = lit.base10_parse()?;
                Ok(())
            } else if meta.path.is_ident("previous") {
                previous = Some(meta.value()?.parse::<syn::Type>()?);
                Ok(())
            } else if meta.path.is_ident("split") {
                split = true;
                Ok(())
            } else {
                Err(meta.error(
                    "expected `name = \"...\"`, `version = N`, `previous = TypeOfThePreviousVersion` or `split`",
                ))
            }
        })?;
    }
    Ok(EventAttrs {
        name,
        version,
        previous,
        split,
    })
}

fn layout(input: &DeriveInput) -> syn::Result<Tokens> {
    let ident = &input.ident;
    let container = rkyv_attrs(&input.attrs);
    let body = match &input.data {
        Data::Struct(s) => {
            let fields = fields(&s.fields);
            quote! {
                ::varvedb::LayoutHasher::new("struct")
                    .str(#container)
                    #fields
                    .finish()
            }
        }
        Data::Enum(e) => {
            let count = e.variants.len() as u64;
            let variants = e.variants.iter().map(|v| {
                let name = v.ident.to_string();
                let attrs = rkyv_attrs(&v.attrs);
                let fields = fields(&v.fields);
                quote! { .str(#name).str(#attrs) #fields }
            });
            quote! {
                ::varvedb::LayoutHasher::new("enum")
                    .str(#container)
                    .count(#count)
                    #(#variants)*
                    .finish()
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new_spanned(
                u.union_token,
                "unions have no layout fingerprint",
            ))
        }
    };
    let generics = with_layout_bounds(&input.generics);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::varvedb::Layout for #ident #ty_generics #where_clause {
            const LAYOUT: ::varvedb::Fingerprint = #body;
        }
    })
}

/// The hasher calls for a list of fields: their shape (named, tuple, unit) and count, then each
/// field's name, rkyv attributes and type's fingerprint.
fn fields(fields: &Fields) -> Tokens {
    let (shape, count) = match fields {
        Fields::Named(f) => ("named", f.named.len()),
        Fields::Unnamed(f) => ("tuple", f.unnamed.len()),
        Fields::Unit => ("unit", 0),
    };
    let count = count as u64;
    let each = fields.iter().enumerate().map(|(i, f)| {
        let name = f
            .ident
            .as_ref()
            .map_or_else(|| i.to_string(), ToString::to_string);
        let attrs = rkyv_attrs(&f.attrs);
        let ty = &f.ty;
        quote! {
            .str(#name)
            .str(#attrs)
            .layout(<#ty as ::varvedb::Layout>::LAYOUT)
        }
    });
    quote! { .str(#shape).count(#count) #(#each)* }
}

/// `T: varvedb::Layout` for every type parameter.
fn with_layout_bounds(generics: &Generics) -> Generics {
    let mut generics = generics.clone();
    let params: Vec<_> = generics.type_params().map(|p| p.ident.clone()).collect();
    let clause = generics.make_where_clause();
    for p in params {
        clause
            .predicates
            .push(syn::parse_quote!(#p: ::varvedb::Layout));
    }
    generics
}

/// The items of `#[rkyv(...)]` attributes that change how a value is archived, as text (`with =
/// ...`, `as = ...`, `remote = ...` and any item not known to leave the bytes alone), in order.
/// Items that only name generated types or add derives and bounds to them are left out, so that
/// adding `#[rkyv(derive(Debug))]` does not change a fingerprint.
fn rkyv_attrs(attrs: &[Attribute]) -> String {
    const NEUTRAL: &[&str] = &[
        "derive",
        "compare",
        "archived",
        "resolver",
        "crate",
        "omit_bounds",
        "archive_bounds",
        "serialize_bounds",
        "deserialize_bounds",
        "bytecheck",
    ];
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("rkyv")) {
        let Meta::List(list) = &attr.meta else {
            continue;
        };
        let Ok(items) = list
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated)
        else {
            // Not understood: keep all of it.
            out.push(normalized(list.tokens.clone()));
            continue;
        };
        for item in items {
            let neutral = item
                .path()
                .get_ident()
                .is_some_and(|i| NEUTRAL.contains(&i.to_string().as_str()));
            if !neutral {
                out.push(normalized(item.to_token_stream()));
            }
        }
    }
    out.join(";")
}

/// Tokens as text without the spacing the source happened to use.
fn normalized(tokens: Tokens) -> String {
    tokens
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
