package schema

import (
	"errors"
	"fmt"

	ctyjson "github.com/zclconf/go-cty/cty/json"

	pluginv1 "github.com/halo-ha/halo/sdk/proto/halo/plugin/v1"
)

// ToProto encodes the schema for the wire. The schema must be valid.
func (s *Schema) ToProto() (*pluginv1.Schema, error) {
	out := &pluginv1.Schema{}
	for _, a := range s.Attributes {
		pa := &pluginv1.Attribute{
			Name:        a.Name,
			Type:        typeToProto[a.Type],
			Required:    a.Required,
			Description: a.Description,
		}
		def, err := a.DefaultValue()
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
		}
		if !def.IsNull() {
			if pa.DefaultJson, err = ctyjson.Marshal(def, def.Type()); err != nil {
				return nil, fmt.Errorf("attribute %q: encode default: %w", a.Name, err)
			}
		}
		out.Attributes = append(out.Attributes, pa)
	}
	for _, b := range s.Blocks {
		body, err := b.Body.ToProto()
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", b.Name, err)
		}
		nesting := pluginv1.BlockNesting_BLOCK_NESTING_SINGLE
		if b.Nesting == NestingList {
			nesting = pluginv1.BlockNesting_BLOCK_NESTING_LIST
		}
		out.Blocks = append(out.Blocks, &pluginv1.Block{
			Name:        b.Name,
			Nesting:     nesting,
			Required:    b.Required,
			MinItems:    uint32(b.MinItems),
			MaxItems:    uint32(b.MaxItems),
			Description: b.Description,
			Body:        body,
		})
	}
	return out, nil
}

// FromProto decodes a schema received from a plugin and validates it, so a
// host never builds a decoder from a malformed schema.
func FromProto(p *pluginv1.Schema) (*Schema, error) {
	s, err := fromProto(p)
	if err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid schema: %w", err)
	}
	return s, nil
}

func fromProto(p *pluginv1.Schema) (*Schema, error) {
	if p == nil {
		return nil, errors.New("schema is missing")
	}
	s := &Schema{}
	for _, pa := range p.GetAttributes() {
		ty, ok := typeFromProto[pa.GetType()]
		if !ok {
			return nil, fmt.Errorf("attribute %q: unsupported type %s", pa.GetName(), pa.GetType())
		}
		a := Attribute{
			Name:        pa.GetName(),
			Type:        ty,
			Required:    pa.GetRequired(),
			Description: pa.GetDescription(),
		}
		if len(pa.GetDefaultJson()) > 0 {
			def, err := ctyjson.Unmarshal(pa.GetDefaultJson(), ty.CtyType())
			if err != nil {
				return nil, fmt.Errorf("attribute %q: decode default: %w", a.Name, err)
			}
			a.Default = def
		}
		s.Attributes = append(s.Attributes, a)
	}
	for _, pb := range p.GetBlocks() {
		var nesting Nesting
		switch pb.GetNesting() {
		case pluginv1.BlockNesting_BLOCK_NESTING_SINGLE:
			nesting = NestingSingle
		case pluginv1.BlockNesting_BLOCK_NESTING_LIST:
			nesting = NestingList
		default:
			return nil, fmt.Errorf("block %q: unsupported nesting %s", pb.GetName(), pb.GetNesting())
		}
		body, err := fromProto(pb.GetBody())
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", pb.GetName(), err)
		}
		s.Blocks = append(s.Blocks, Block{
			Name:        pb.GetName(),
			Nesting:     nesting,
			Required:    pb.GetRequired(),
			MinItems:    int(pb.GetMinItems()),
			MaxItems:    int(pb.GetMaxItems()),
			Description: pb.GetDescription(),
			Body:        *body,
		})
	}
	return s, nil
}

var typeToProto = map[Type]pluginv1.AttributeType{
	TypeString:       pluginv1.AttributeType_ATTRIBUTE_TYPE_STRING,
	TypeNumber:       pluginv1.AttributeType_ATTRIBUTE_TYPE_NUMBER,
	TypeBool:         pluginv1.AttributeType_ATTRIBUTE_TYPE_BOOL,
	TypeListOfString: pluginv1.AttributeType_ATTRIBUTE_TYPE_LIST_OF_STRING,
	TypeMapOfString:  pluginv1.AttributeType_ATTRIBUTE_TYPE_MAP_OF_STRING,
	TypeDuration:     pluginv1.AttributeType_ATTRIBUTE_TYPE_DURATION,
}

var typeFromProto = func() map[pluginv1.AttributeType]Type {
	m := make(map[pluginv1.AttributeType]Type, len(typeToProto))
	for k, v := range typeToProto {
		m[v] = k
	}
	return m
}()
