//! gRPC codecs that move pre-encoded protobuf bytes, so neither the load generator nor the sink
//! re-encodes or fully decodes the (large) export request.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// gRPC path of the OTLP trace export method.
pub(crate) const TRACE_EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Client side: sends an already-encoded request, decodes the reply as `Reply`.
pub(crate) struct PreEncodedRequestCodec<Reply>(PhantomData<Reply>);

impl<Reply> Default for PreEncodedRequestCodec<Reply> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Reply> Codec for PreEncodedRequestCodec<Reply>
where
    Reply: prost::Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = Reply;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<Reply>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

/// Server side: hands the raw request bytes to the handler, encodes the reply with prost.
pub(crate) struct RawRequestCodec<Reply>(PhantomData<Reply>);

impl<Reply> Default for RawRequestCodec<Reply> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Reply> Codec for RawRequestCodec<Reply>
where
    Reply: prost::Message + Send + 'static,
{
    type Encode = Reply;
    type Decode = Bytes;
    type Encoder = ProstEncoder<Reply>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

pub(crate) struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

pub(crate) struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Splits the frame off tonic's buffer without copying.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

pub(crate) struct ProstEncoder<M>(PhantomData<M>);

impl<M: prost::Message> Encoder for ProstEncoder<M> {
    type Item = M;
    type Error = Status;

    fn encode(&mut self, item: M, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("failed to encode reply: {error}")))
    }
}

pub(crate) struct ProstDecoder<M>(PhantomData<M>);

impl<M: prost::Message + Default> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("failed to decode reply: {error}")))
    }
}
